package dev.dequant4j.internal;

import java.io.FilterWriter;
import java.io.IOException;
import java.io.PrintWriter;

/**
 * The one sanitizer for text that may come from a file (tensor names, module names, config values, paths) on its
 * way to a terminal or a log. A character is shown as {@code ?} if it could rewrite the terminal, forge or hide a
 * line, or make the text read differently from what it is:
 *
 * <ul>
 *   <li>C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F): ESC starts ANSI sequences, CR and LF forge
 *       lines;</li>
 *   <li>format characters (Unicode category Cf): the bidirectional overrides and isolates (U+202A-U+202E,
 *       U+2066-U+2069, U+200E, U+200F, U+061C) that reorder what is shown, zero-width characters (U+200B-U+200D,
 *       U+2060), the byte-order mark, soft hyphen, tag characters;</li>
 *   <li>the line and paragraph separators U+2028 and U+2029, and unpaired surrogates.</li>
 * </ul>
 *
 * JSON output does not go through it: the JSON writer escapes every non-ASCII and control character, which keeps
 * the text exact and the terminal safe.
 */
public final class Printable {
    private Printable() {}

    /** Whether code point {@code c} is shown as {@code ?}. */
    public static boolean unsafe(int c) {
        if (Character.isISOControl(c)) {
            return true;
        }
        int type = Character.getType(c);
        return type == Character.FORMAT || type == Character.LINE_SEPARATOR || type == Character.PARAGRAPH_SEPARATOR
                || type == Character.SURROGATE;
    }

    /** {@code s} with every unsafe character (a surrogate pair counts as one) replaced by {@code ?}. */
    public static String of(CharSequence s) {
        StringBuilder sb = null;
        for (int i = 0; i < s.length(); ) {
            int c = Character.codePointAt(s, i);
            int n = Character.charCount(c);
            if (unsafe(c)) {
                if (sb == null) {
                    sb = new StringBuilder(s.length()).append(s, 0, i);
                }
                sb.append('?');
            } else if (sb != null) {
                sb.appendCodePoint(c);
            }
            i += n;
        }
        return sb == null ? s.toString() : sb.toString();
    }

    /**
     * A writer over {@code raw} that shows every unsafe character it is given as {@code ?}; the line ends of
     * {@code println} pass through. {@link #raw} gets the writer back for text dequant4j composes itself with
     * control characters on purpose (the progress bar's carriage return).
     */
    public static PrintWriter writer(PrintWriter raw) {
        if (raw instanceof Filtered) {
            return raw;
        }
        return new Filtered(raw);
    }

    /** The unfiltered writer under {@code w}, or {@code w} itself. */
    public static PrintWriter raw(PrintWriter w) {
        return w instanceof Filtered f ? f.raw : w;
    }

    private static final class Filtered extends PrintWriter {
        final PrintWriter raw;

        Filtered(PrintWriter raw) {
            super(new FilterWriter(raw) {
                private char high;

                @Override
                public void write(int c) throws IOException {
                    char ch = (char) c;
                    if (high != 0) {
                        char h = high;
                        high = 0;
                        if (Character.isLowSurrogate(ch)) {
                            int cp = Character.toCodePoint(h, ch);
                            if (unsafe(cp)) {
                                super.write('?');
                            } else {
                                super.write(h);
                                super.write(ch);
                            }
                            return;
                        }
                        super.write('?');
                    }
                    if (Character.isHighSurrogate(ch)) {
                        high = ch;
                    } else {
                        super.write(unsafe(ch) ? '?' : ch);
                    }
                }

                @Override
                public void write(char[] cbuf, int off, int len) throws IOException {
                    for (int i = off; i < off + len; i++) {
                        write(cbuf[i]);
                    }
                }

                @Override
                public void write(String str, int off, int len) throws IOException {
                    for (int i = off; i < off + len; i++) {
                        write(str.charAt(i));
                    }
                }
            }, true);
            this.raw = raw;
        }

        @Override
        public void println() {
            flush();
            raw.println();
        }
    }
}

package dev.dequant4j.internal.lora;

import java.util.HashMap;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Python {@code re} patterns, as found in PEFT configs ({@code rank_pattern}, {@code alpha_pattern}, a regex
 * {@code target_modules}), compiled for {@code java.util.regex}. The two dialects agree on everything these configs
 * use in practice (literals, {@code .}, classes, groups, alternation, quantifiers, anchors); the differences that
 * would make a valid Python pattern fail or change meaning in Java are translated:
 * <ul>
 *   <li>named groups {@code (?P<name>...)} and back references {@code (?P=name)} (Java spells them
 *       {@code (?<name>...)} and {@code \k<name>}, and allows no underscore in group names);</li>
 *   <li>{@code \Z} (end of string in Python, "before a final line terminator" in Java) becomes {@code \z};</li>
 *   <li>a {@code {} that does not start a quantifier is a literal in Python and an error in Java;
 *       {@code {,n}} means {@code {0,n}} and {@code {,}} means {@code {0,}};</li>
 *   <li>inside a character class, {@code [} and {@code &&} are literals in Python but nested classes and
 *       intersections in Java; a {@code ]} right after the opening {@code [} or {@code [^} is a literal;</li>
 *   <li>{@code \w}, {@code \d}, {@code \s} and {@code \b} are Unicode-aware in Python 3 (compiled with
 *       {@link Pattern#UNICODE_CHARACTER_CLASS});</li>
 *   <li>the only line terminator of {@code .}, {@code ^} and {@code $} is {@code \n} in Python; Java's {@code .}
 *       would also stop at {@code \r}, U+0085, U+2028 and U+2029 (compiled with {@link Pattern#UNIX_LINES}).</li>
 * </ul>
 * Not handled (a pattern using them either fails to compile, with a clear message, or is very unlikely in a module
 * name pattern): conditional groups {@code (?(1)...)}, Python-only inline flags such as {@code (?L)} and
 * {@code (?a)}, and the exact semantics of possessive quantifiers before Python 3.11.
 */
public final class PythonRegex {
    private static final int FLAGS = Pattern.UNICODE_CHARACTER_CLASS | Pattern.UNIX_LINES;

    private PythonRegex() {}

    /** Compiles a Python pattern; throws {@link PatternSyntaxException} if Java cannot compile the translation. */
    public static Pattern compile(String python) {
        return Pattern.compile(translate(python), FLAGS);
    }

    /**
     * PEFT's {@code re.match(rf"(.*\.)?({key})$", moduleName)}: the key matches the module name or a dotted suffix.
     * The pattern is {@linkplain #metered metered}: matched against a text that counts the characters it is asked
     * for, the count bounds the backtracking steps.
     */
    public static Pattern suffixPattern(String key) {
        return Pattern.compile(metered("(.*\\.)?(" + translate(key) + ")$"), FLAGS);
    }

    /**
     * Zero-width, and always matches a non-empty text: it reads the character at the position (or, at the end, the
     * one before it). Atomic, so it is never backtracked into.
     */
    /** Deepest nesting of groups in a pattern (PEFT's keys nest two or three). */
    static final int MAX_GROUP_DEPTH = 100;

    static final String PROBE = "(?>(?=[\\s\\S])|(?<=[\\s\\S])|)";

    /**
     * {@code java} with {@link #PROBE} at the start of every group and every alternative. Backtracking is made of
     * entering alternatives and group iterations; with the probe each of these reads at least one character, even
     * where the pattern itself reads none ({@code (|)(|)...(|)\Z} backtracks 2^n times without reading a character),
     * so a budget of characters read is a budget of backtracking steps. The meaning is unchanged: the probe matches
     * the empty string wherever it is tried on a non-empty text, and on the empty text through its last branch.
     */
    static String metered(String java) {
        StringBuilder out = new StringBuilder(java.length() * 2);
        int n = java.length();
        int depth = 0;
        for (int i = 0; i < n; ) {
            char c = java.charAt(i);
            if (c == '\\') {
                out.append(java, i, Math.min(n, i + 2));
                i += 2;
            } else if (c == '[') {
                int end = classEnd(java, i);
                out.append(java, i, end);
                i = end;
            } else if (c == ')') {
                depth--;
                out.append(c);
                i++;
            } else if (c == '(') {
                // java.util.regex compiles and matches groups recursively: bounded here, not by the stack's luck
                if (++depth > MAX_GROUP_DEPTH) {
                    throw new PatternSyntaxException("groups nested deeper than " + MAX_GROUP_DEPTH, java, i);
                }
                int body = groupBody(java, i);
                out.append(java, i, body);
                if (body > i + 1 && java.charAt(body - 1) == ')') {
                    depth--;
                    i = body; // an inline flag such as (?i): no body
                    continue;
                }
                out.append(PROBE);
                i = body;
            } else if (c == '|') {
                out.append('|').append(PROBE);
                i++;
            } else {
                out.append(c);
                i++;
            }
        }
        return out.toString();
    }

    /** The index after the character class opening at {@code start} (translate leaves no nested class). */
    private static int classEnd(String p, int start) {
        int i = start + 1;
        if (i < p.length() && p.charAt(i) == '^') {
            i++;
        }
        if (i < p.length() && p.charAt(i) == ']') {
            i++;
        }
        while (i < p.length() && p.charAt(i) != ']') {
            i += p.charAt(i) == '\\' ? 2 : 1;
        }
        return Math.min(p.length(), i + 1);
    }

    /** The index where the body of the group opening at {@code start} begins (after {@code (}, {@code (?:}, ...). */
    private static int groupBody(String p, int start) {
        int i = start + 1;
        if (i >= p.length() || p.charAt(i) != '?') {
            return i;
        }
        i++;
        if (p.startsWith("<=", i) || p.startsWith("<!", i)) {
            return i + 2;
        }
        if (i < p.length() && p.charAt(i) == '<') {
            int end = p.indexOf('>', i);
            return end < 0 ? p.length() : end + 1;
        }
        if (i < p.length() && "=!>:".indexOf(p.charAt(i)) >= 0) {
            return i + 1;
        }
        // inline flags: (?i) or (?i-s:...)
        while (i < p.length() && (Character.isLetter(p.charAt(i)) || p.charAt(i) == '-')) {
            i++;
        }
        return Math.min(p.length(), i + 1);
    }

    /** A match read more characters than its budget allowed. */
    public static final class TooManySteps extends RuntimeException {
        private static final long serialVersionUID = 1L;

        TooManySteps() {
            super(null, null, false, false);
        }
    }

    /**
     * {@code pattern.matcher(text).lookingAt()}, reading at most {@code steps} characters of {@code text}; for a
     * {@link #suffixPattern} that bounds its backtracking steps.
     *
     * @throws TooManySteps when the budget runs out
     */
    public static boolean lookingAt(Pattern pattern, String text, long steps) {
        return pattern.matcher(new BudgetedText(text, steps)).lookingAt();
    }

    /** The module name as the regex engine sees it, counting every character it examines. */
    private static final class BudgetedText implements CharSequence {
        private final String text;
        private long steps;

        BudgetedText(String text, long steps) {
            this.text = text;
            this.steps = steps;
        }

        @Override
        public char charAt(int index) {
            if (--steps < 0) {
                throw new TooManySteps();
            }
            return text.charAt(index);
        }

        @Override
        public int length() {
            return text.length();
        }

        @Override
        public CharSequence subSequence(int start, int end) {
            return text.subSequence(start, end);
        }

        @Override
        public String toString() {
            return text;
        }
    }

    /** Translates Python {@code re} syntax to {@code java.util.regex} syntax (see the class comment). */
    public static String translate(String p) {
        StringBuilder out = new StringBuilder(p.length() + 8);
        Map<String, String> groupNames = new HashMap<>();
        int n = p.length();
        int i = 0;
        boolean inClass = false;
        int classStart = -1;
        while (i < n) {
            char c = p.charAt(i);
            if (c == '\\') {
                if (i + 1 >= n) {
                    out.append("\\\\");
                    i++;
                    continue;
                }
                char e = p.charAt(i + 1);
                out.append(e == 'Z' && !inClass ? "\\z" : "\\" + e);
                i += 2;
                continue;
            }
            if (inClass) {
                if (c == ']' && i != classStart) {
                    inClass = false;
                    out.append(']');
                } else if (c == ']' || c == '[') {
                    out.append('\\').append(c);
                } else if (c == '&' && i + 1 < n && p.charAt(i + 1) == '&') {
                    out.append("&\\&");
                    i++;
                } else {
                    out.append(c);
                }
                i++;
                continue;
            }
            if (c == '[') {
                inClass = true;
                out.append('[');
                i++;
                if (i < n && p.charAt(i) == '^') {
                    out.append('^');
                    i++;
                }
                classStart = i;
                continue;
            }
            if (c == '(' && p.startsWith("(?P<", i)) {
                int end = p.indexOf('>', i + 4);
                if (end > 0) {
                    String name = p.substring(i + 4, end);
                    String javaName = "g" + groupNames.size() + name.replaceAll("[^A-Za-z0-9]", "");
                    groupNames.put(name, javaName);
                    out.append("(?<").append(javaName).append('>');
                    i = end + 1;
                    continue;
                }
            }
            if (c == '(' && p.startsWith("(?P=", i)) {
                int end = p.indexOf(')', i + 4);
                String javaName = end > 0 ? groupNames.get(p.substring(i + 4, end)) : null;
                if (javaName != null) {
                    out.append("\\k<").append(javaName).append('>');
                    i = end + 1;
                    continue;
                }
            }
            if (c == '{') {
                int end = quantifierEnd(p, i);
                if (end < 0) {
                    out.append("\\{");
                } else {
                    String q = p.substring(i, end + 1);
                    out.append(q.startsWith("{,") ? "{0" + q.substring(1) : q);
                    i = end;
                }
                i++;
                continue;
            }
            out.append(c);
            i++;
        }
        return out.toString();
    }

    /** The index of the closing brace if {@code p[start]} opens a Python quantifier {m}, {m,}, {,n}, {,} or {m,n}. */
    private static int quantifierEnd(String p, int start) {
        int i = start + 1;
        int digitsBefore = 0;
        while (i < p.length() && Character.isDigit(p.charAt(i))) {
            i++;
            digitsBefore++;
        }
        if (i < p.length() && p.charAt(i) == '}') {
            return digitsBefore > 0 ? i : -1;
        }
        if (i >= p.length() || p.charAt(i) != ',') {
            return -1;
        }
        i++;
        while (i < p.length() && Character.isDigit(p.charAt(i))) {
            i++;
        }
        return i < p.length() && p.charAt(i) == '}' ? i : -1;
    }
}

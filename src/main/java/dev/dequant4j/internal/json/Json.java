package dev.dequant4j.internal.json;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.HeapBudget;
import dev.dequant4j.internal.InputFiles;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Entry points for reading and writing JSON documents. */
public final class Json {
    /** Upper bound for the small JSON files we read whole (config, index, adapter config). */
    public static final long MAX_FILE_BYTES = 100_000_000L;
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private Json() {}

    public static JsonValue parse(byte[] utf8) {
        JsonReader r = new JsonReader(utf8);
        JsonValue v = r.nextValue();
        r.endDocument();
        return v;
    }

    public static JsonValue parse(String text) {
        return parse(text.getBytes(StandardCharsets.UTF_8));
    }

    /** Parses a document that must be an object. */
    public static JsonObject parseObject(byte[] utf8) {
        JsonReader r = new JsonReader(utf8);
        if (r.peek() != JsonReader.Token.BEGIN_OBJECT) {
            throw r.error("expected a JSON object");
        }
        JsonValue v = r.nextValue();
        r.endDocument();
        return (JsonObject) v;
    }

    /**
     * Reads a whole file of at most {@code maxBytes} and parses it as an object. The size, and the heap its tree will
     * take ({@link HeapBudget}), are checked before any byte is read, so a huge file cannot exhaust the heap. A file
     * that does not start as an object is refused without quoting it: it may be anything, a key file included.
     *
     * @throws Dequant4jException naming the file when it is over {@code maxBytes} or cannot fit in the heap
     */
    public static JsonObject readObject(Path file, long maxBytes) throws IOException {
        InputFiles.requireRegular(file);
        byte[] bytes;
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size > maxBytes) {
                throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, "is " + size
                        + " bytes, more than the " + maxBytes + "-byte limit for this file");
            }
            HeapBudget.require(file, "this " + size + "-byte JSON file", HeapBudget.PER_JSON_BYTE * size);
            bytes = new byte[(int) size];
            java.nio.ByteBuffer bb = java.nio.ByteBuffer.wrap(bytes);
            while (bb.hasRemaining()) {
                if (ch.read(bb) < 0) {
                    throw new JsonException("file shrank while being read");
                }
            }
        }
        int first = 0;
        while (first < bytes.length && (bytes[first] == ' ' || bytes[first] == '\t' || bytes[first] == '\n'
                || bytes[first] == '\r')) {
            first++;
        }
        if (first == bytes.length || bytes[first] != '{') {
            throw new JsonException("not a JSON object (the file does not start with '{')");
        }
        return parseObject(bytes);
    }

    /** Output styles. */
    public record Style(int indent, boolean sortKeys, boolean ensureAscii) {
        /** No whitespace at all, as serde_json and the safetensors library write headers. */
        public static final Style COMPACT = new Style(0, false, false);
        /** Python's {@code json.dumps(obj, indent=2, sort_keys=True)}, as transformers writes index files. */
        public static final Style PYTHON_INDENT2_SORTED = new Style(2, true, true);
        /** Python's {@code json.dumps(obj, indent=2)} keeping key order. */
        public static final Style PYTHON_INDENT2 = new Style(2, false, true);
    }

    public static String write(JsonValue value, Style style) {
        StringBuilder sb = new StringBuilder(256);
        write(sb, value, style, 0);
        return sb.toString();
    }

    private static void write(StringBuilder sb, JsonValue value, Style style, int level) {
        switch (value) {
            case JsonObject o -> {
                if (o.size() == 0) {
                    sb.append("{}");
                    return;
                }
                List<Map.Entry<String, JsonValue>> entries = new ArrayList<>(o.members().entrySet());
                if (style.sortKeys()) {
                    entries.sort(Map.Entry.comparingByKey(Json::comparePython));
                }
                sb.append('{');
                boolean first = true;
                for (Map.Entry<String, JsonValue> e : entries) {
                    if (!first) {
                        sb.append(',');
                    }
                    first = false;
                    newline(sb, style, level + 1);
                    writeString(sb, e.getKey(), style.ensureAscii());
                    sb.append(style.indent() > 0 ? ": " : ":");
                    write(sb, e.getValue(), style, level + 1);
                }
                newline(sb, style, level);
                sb.append('}');
            }
            case JsonArray a -> {
                if (a.size() == 0) {
                    sb.append("[]");
                    return;
                }
                sb.append('[');
                for (int i = 0; i < a.size(); i++) {
                    if (i > 0) {
                        sb.append(',');
                    }
                    newline(sb, style, level + 1);
                    write(sb, a.get(i), style, level + 1);
                }
                newline(sb, style, level);
                sb.append(']');
            }
            case JsonString s -> writeString(sb, s.value(), style.ensureAscii());
            case JsonNumber n -> sb.append(n.text());
            case JsonBoolean b -> sb.append(b.value() ? "true" : "false");
            case JsonNull ignored -> sb.append("null");
        }
    }

    /** Python sorts str keys by code point; Java's String order is by UTF-16 unit, which differs above U+FFFF. */
    private static int comparePython(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    private static void newline(StringBuilder sb, Style style, int level) {
        if (style.indent() > 0) {
            sb.append('\n');
            sb.repeat(' ', style.indent() * level);
        }
    }

    public static void writeString(StringBuilder sb, String s, boolean ensureAscii) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                case '\b' -> sb.append("\\b");
                case '\f' -> sb.append("\\f");
                default -> {
                    // Python's ensure_ascii escapes everything outside ' '..'~', DEL included
                    if (c < 0x20 || (ensureAscii && c > 0x7E)) {
                        sb.append("\\u").append(HEX[c >>> 12]).append(HEX[(c >>> 8) & 0xF])
                                .append(HEX[(c >>> 4) & 0xF]).append(HEX[c & 0xF]);
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        sb.append('"');
    }

    /** Cuts long text for error messages. */
    public static String abbreviate(String s, int max) {
        return s.length() <= max ? s : s.substring(0, max) + "...";
    }
}

package dev.dequant4j.internal.json;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A strict RFC 8259 pull parser over UTF-8 bytes.
 *
 * <p>It never recurses while pulling tokens, rejects invalid UTF-8, unescaped control characters, unpaired
 * surrogates, leading zeros, trailing commas, duplicate object keys and anything after the top-level value other
 * than whitespace. Nesting is limited by {@code maxDepth}. Every error carries the byte offset of the problem,
 * counted from {@code baseOffset}, so a caller parsing a slice of a file reports file offsets.
 */
public final class JsonReader {
    public enum Token { BEGIN_OBJECT, END_OBJECT, BEGIN_ARRAY, END_ARRAY, NAME, STRING, NUMBER, TRUE, FALSE, NULL, END }

    /** Depth that JSON from model files never needs; deeper input is hostile. */
    public static final int DEFAULT_MAX_DEPTH = 128;

    private static final int DOC_EMPTY = 0, DOC_DONE = 1, ARR_EMPTY = 2, ARR_AFTER_VALUE = 3,
            OBJ_EMPTY = 4, OBJ_AFTER_VALUE = 5, OBJ_AFTER_NAME = 6;

    private final byte[] buf;
    private final int end;
    private final int maxDepth;
    private final long baseOffset;
    private int pos;

    private int[] scopes = new int[16];
    /** The keys of the object open at each depth, reused from object to object. */
    private Keys[] keys = new Keys[16];
    private int depth;

    /** The last number scanned: its text range, and its value when it is an integer that fits a long. */
    private int numStart;
    private int numEnd;
    private boolean numIsLong;
    private long numLong;

    private Token peeked;
    private int tokenStart;

    public JsonReader(byte[] buf) {
        this(buf, 0, buf.length, DEFAULT_MAX_DEPTH, 0);
    }

    public JsonReader(byte[] buf, int start, int end, int maxDepth, long baseOffset) {
        this.buf = buf;
        this.pos = start;
        this.end = end;
        this.maxDepth = maxDepth;
        this.baseOffset = baseOffset - start;
        scopes[0] = DOC_EMPTY;
    }

    /** Absolute offset of the start of the last peeked token (or the current position). */
    public long offset() {
        return baseOffset + (peeked != null ? tokenStart : pos);
    }

    public JsonException error(String message) {
        return new JsonException(message, offset());
    }

    private JsonException errorAt(String message, int at) {
        return new JsonException(message, baseOffset + at);
    }

    public Token peek() {
        if (peeked != null) {
            return peeked;
        }
        int scope = scopes[depth];
        switch (scope) {
            case DOC_EMPTY -> {
                skipWhitespace();
                if (pos >= end) {
                    throw errorAt("empty JSON document", pos);
                }
                scopes[depth] = DOC_DONE;
                return startValue();
            }
            case DOC_DONE -> {
                skipWhitespace();
                if (pos < end) {
                    throw errorAt("unexpected data after the JSON value", pos);
                }
                tokenStart = pos;
                return peeked = Token.END;
            }
            case ARR_EMPTY -> {
                skipWhitespace();
                if (pos < end && buf[pos] == ']') {
                    tokenStart = pos;
                    return peeked = Token.END_ARRAY;
                }
                scopes[depth] = ARR_AFTER_VALUE;
                return startValue();
            }
            case ARR_AFTER_VALUE -> {
                skipWhitespace();
                int c = next("',' or ']'");
                if (c == ']') {
                    pos--;
                    tokenStart = pos;
                    return peeked = Token.END_ARRAY;
                }
                if (c != ',') {
                    throw errorAt("expected ',' or ']' in array", pos - 1);
                }
                skipWhitespace();
                return startValue();
            }
            case OBJ_EMPTY, OBJ_AFTER_VALUE -> {
                skipWhitespace();
                int c = next(scope == OBJ_EMPTY ? "'\"' or '}'" : "',' or '}'");
                if (c == '}') {
                    pos--;
                    tokenStart = pos;
                    return peeked = Token.END_OBJECT;
                }
                if (scope == OBJ_AFTER_VALUE) {
                    if (c != ',') {
                        throw errorAt("expected ',' or '}' in object", pos - 1);
                    }
                    skipWhitespace();
                    c = next("'\"'");
                }
                if (c != '"') {
                    throw errorAt("expected a string key in object", pos - 1);
                }
                pos--;
                tokenStart = pos;
                scopes[depth] = OBJ_AFTER_NAME;
                return peeked = Token.NAME;
            }
            case OBJ_AFTER_NAME -> {
                skipWhitespace();
                if (next("':'") != ':') {
                    throw errorAt("expected ':' after object key", pos - 1);
                }
                skipWhitespace();
                scopes[depth] = OBJ_AFTER_VALUE;
                return startValue();
            }
            default -> throw new IllegalStateException("scope " + scope);
        }
    }

    private Token startValue() {
        if (pos >= end) {
            throw errorAt("unexpected end of JSON, expected a value", pos);
        }
        tokenStart = pos;
        int c = buf[pos];
        return peeked = switch (c) {
            case '{' -> Token.BEGIN_OBJECT;
            case '[' -> Token.BEGIN_ARRAY;
            case '"' -> Token.STRING;
            case 't' -> literal("true", Token.TRUE);
            case 'f' -> literal("false", Token.FALSE);
            case 'n' -> literal("null", Token.NULL);
            default -> {
                if (c == '-' || (c >= '0' && c <= '9')) {
                    yield Token.NUMBER;
                }
                throw errorAt("unexpected character " + describeByte(c) + ", expected a value", pos);
            }
        };
    }

    private Token literal(String word, Token token) {
        int n = word.length();
        if (end - pos < n) {
            throw errorAt("invalid literal, expected " + word, pos);
        }
        for (int i = 0; i < n; i++) {
            if (buf[pos + i] != word.charAt(i)) {
                throw errorAt("invalid literal, expected " + word, pos);
            }
        }
        return token;
    }

    private int next(String expected) {
        if (pos >= end) {
            throw errorAt("unexpected end of JSON, expected " + expected, pos);
        }
        return buf[pos++];
    }

    private void skipWhitespace() {
        while (pos < end) {
            byte c = buf[pos];
            if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
                pos++;
            } else {
                return;
            }
        }
    }

    private void expect(Token t) {
        Token p = peek();
        if (p != t) {
            throw error("expected " + describe(t) + " but found " + describe(p));
        }
        peeked = null;
    }

    private static String describe(Token t) {
        return switch (t) {
            case BEGIN_OBJECT -> "an object";
            case END_OBJECT -> "'}'";
            case BEGIN_ARRAY -> "an array";
            case END_ARRAY -> "']'";
            case NAME -> "an object key";
            case STRING -> "a string";
            case NUMBER -> "a number";
            case TRUE, FALSE -> "a boolean";
            case NULL -> "null";
            case END -> "the end of the document";
        };
    }

    /** Enters a scope; called before the bracket is consumed, so a depth error points at it. */
    private void push(int scope) {
        if (depth + 1 > maxDepth) {
            throw errorAt("JSON nested deeper than " + maxDepth + " levels", pos);
        }
        if (depth + 1 == scopes.length) {
            scopes = Arrays.copyOf(scopes, scopes.length * 2);
            keys = Arrays.copyOf(keys, scopes.length);
        }
        scopes[++depth] = scope;
    }

    public void beginObject() {
        expect(Token.BEGIN_OBJECT);
        push(OBJ_EMPTY);
        pos++;
        if (keys[depth] == null) {
            keys[depth] = new Keys();
        } else {
            keys[depth].clear();
        }
    }

    public void endObject() {
        expect(Token.END_OBJECT);
        pos++;
        keys[depth].clear();
        depth--;
    }

    public void beginArray() {
        expect(Token.BEGIN_ARRAY);
        push(ARR_EMPTY);
        pos++;
    }

    public void endArray() {
        expect(Token.END_ARRAY);
        pos++;
        depth--;
    }

    /** True while the current array or object has more elements. */
    public boolean hasNext() {
        Token t = peek();
        return t != Token.END_OBJECT && t != Token.END_ARRAY && t != Token.END;
    }

    /** The next object key; a key seen before in the same object is an error. */
    public String nextName() {
        expect(Token.NAME);
        int at = pos;
        String name = readString();
        if (!keys[depth].add(name)) {
            throw JsonException.duplicateKey(name, baseOffset + at);
        }
        return name;
    }

    /**
     * The next object key, for a caller that keeps this object's keys in {@code seen} (typically the map it builds):
     * a key already there is the duplicate-key error, and the reader keeps no second set of keys, which in a large
     * object costs as much as the caller's map. Use it for every key of an object or for none.
     */
    public String nextName(Map<String, ?> seen) {
        expect(Token.NAME);
        int at = pos;
        String name = readString();
        if (seen.containsKey(name)) {
            throw JsonException.duplicateKey(name, baseOffset + at);
        }
        return name;
    }

    public String nextString() {
        expect(Token.STRING);
        return readString();
    }

    public boolean nextBoolean() {
        Token t = peek();
        if (t != Token.TRUE && t != Token.FALSE) {
            throw error("expected a boolean but found " + describe(t));
        }
        peeked = null;
        pos += t == Token.TRUE ? 4 : 5;
        return t == Token.TRUE;
    }

    public void nextNull() {
        expect(Token.NULL);
        pos += 4;
    }

    public JsonNumber nextNumber() {
        expect(Token.NUMBER);
        return readNumber();
    }

    /** The next value as a long; fractions, exponents and out-of-range integers are errors. */
    public long nextLong() {
        Token t = peek();
        if (t != Token.NUMBER) {
            throw error("expected an integer but found " + describe(t));
        }
        int at = pos;
        peeked = null;
        scanNumber();
        if (!numIsLong) {
            String text = new String(buf, numStart, numEnd - numStart, StandardCharsets.ISO_8859_1);
            throw errorAt("expected an integer in the 64-bit range but found " + Json.abbreviate(text, 40), at);
        }
        return numLong;
    }

    /** Skips the next value, however nested, without building it. */
    public void skipValue() {
        int startDepth = depth;
        do {
            switch (peek()) {
                case BEGIN_OBJECT -> beginObject();
                case BEGIN_ARRAY -> beginArray();
                case END_OBJECT -> endObject();
                case END_ARRAY -> endArray();
                case NAME -> nextName();
                case STRING -> nextString();
                case NUMBER -> nextNumber();
                case TRUE, FALSE -> nextBoolean();
                case NULL -> nextNull();
                case END -> throw error("unexpected end of JSON");
            }
        } while (depth > startDepth);
    }

    /** Reads the next value into a tree. Recursion is bounded by {@code maxDepth}. */
    public JsonValue nextValue() {
        return switch (peek()) {
            case BEGIN_OBJECT -> {
                beginObject();
                Map<String, JsonValue> members = new LinkedHashMap<>();
                while (hasNext()) {
                    String k = nextName(members);
                    members.put(k, nextValue());
                }
                endObject();
                yield new JsonObject(members);
            }
            case BEGIN_ARRAY -> {
                beginArray();
                List<JsonValue> values = new ArrayList<>();
                while (hasNext()) {
                    values.add(nextValue());
                }
                endArray();
                yield new JsonArray(values);
            }
            case STRING -> new JsonString(nextString());
            case NUMBER -> nextNumber();
            case TRUE, FALSE -> JsonBoolean.of(nextBoolean());
            case NULL -> {
                nextNull();
                yield JsonNull.NULL;
            }
            default -> throw error("expected a value but found " + describe(peek()));
        };
    }

    /** Checks that nothing but whitespace follows the top-level value. */
    public void endDocument() {
        expect(Token.END);
    }

    private JsonNumber readNumber() {
        scanNumber();
        if (numIsLong) {
            return JsonNumber.of(numLong);
        }
        return JsonNumber.ofText(new String(buf, numStart, numEnd - numStart, StandardCharsets.ISO_8859_1));
    }

    /** Scans the number at {@code pos} into the num* fields, without allocating in the common (long) case. */
    private void scanNumber() {
        int start = pos;
        boolean negative = false;
        if (buf[pos] == '-') {
            negative = true;
            pos++;
        }
        if (pos >= end || !isDigit(buf[pos])) {
            throw errorAt("invalid number: expected a digit", pos);
        }
        boolean integral = true;
        if (buf[pos] == '0') {
            pos++;
            if (pos < end && isDigit(buf[pos])) {
                throw errorAt("invalid number: leading zero", start);
            }
        } else {
            while (pos < end && isDigit(buf[pos])) {
                pos++;
            }
        }
        int intEnd = pos;
        if (pos < end && buf[pos] == '.') {
            integral = false;
            pos++;
            if (pos >= end || !isDigit(buf[pos])) {
                throw errorAt("invalid number: expected a digit after '.'", pos);
            }
            while (pos < end && isDigit(buf[pos])) {
                pos++;
            }
        }
        if (pos < end && (buf[pos] == 'e' || buf[pos] == 'E')) {
            integral = false;
            pos++;
            if (pos < end && (buf[pos] == '+' || buf[pos] == '-')) {
                pos++;
            }
            if (pos >= end || !isDigit(buf[pos])) {
                throw errorAt("invalid number: expected a digit in the exponent", pos);
            }
            while (pos < end && isDigit(buf[pos])) {
                pos++;
            }
        }
        numStart = start;
        numEnd = pos;
        numIsLong = false;
        if (!integral) {
            return;
        }
        int digitsStart = negative ? start + 1 : start;
        if (intEnd - digitsStart <= 18) {
            long v = 0;
            for (int i = digitsStart; i < intEnd; i++) {
                v = v * 10 + (buf[i] - '0');
            }
            numLong = negative ? -v : v;
            numIsLong = true;
            return;
        }
        try {
            numLong = Long.parseLong(new String(buf, start, pos - start, StandardCharsets.ISO_8859_1));
            numIsLong = true;
        } catch (NumberFormatException wider) {
            // wider than 64 bits: kept as text
        }
    }

    private static boolean isDigit(byte c) {
        return c >= '0' && c <= '9';
    }

    /** Reads a string starting at the opening quote at {@code pos}. */
    private String readString() {
        int start = ++pos;
        // Fast path: plain ASCII without escapes.
        while (pos < end) {
            byte c = buf[pos];
            if (c == '"') {
                String s = new String(buf, start, pos - start, StandardCharsets.ISO_8859_1);
                pos++;
                return s;
            }
            if (c == '\\' || c < 0x20) {
                break;
            }
            pos++;
        }
        StringBuilder sb = new StringBuilder(pos - start + 16);
        sb.append(new String(buf, start, pos - start, StandardCharsets.ISO_8859_1));
        while (true) {
            if (pos >= end) {
                throw errorAt("unterminated string", start - 1);
            }
            int c = buf[pos];
            if (c == '"') {
                pos++;
                return sb.toString();
            }
            if (c == '\\') {
                readEscape(sb);
            } else if (c >= 0 && c < 0x20) {
                throw errorAt("unescaped control character " + describeByte(c) + " in string", pos);
            } else if (c >= 0) {
                sb.append((char) c);
                pos++;
            } else {
                sb.appendCodePoint(readUtf8());
            }
        }
    }

    private void readEscape(StringBuilder sb) {
        int at = pos;
        pos++;
        if (pos >= end) {
            throw errorAt("unterminated escape", at);
        }
        int c = buf[pos++];
        switch (c) {
            case '"' -> sb.append('"');
            case '\\' -> sb.append('\\');
            case '/' -> sb.append('/');
            case 'b' -> sb.append('\b');
            case 'f' -> sb.append('\f');
            case 'n' -> sb.append('\n');
            case 'r' -> sb.append('\r');
            case 't' -> sb.append('\t');
            case 'u' -> {
                char ch = readHex4(at);
                if (Character.isHighSurrogate(ch)) {
                    if (end - pos < 6 || buf[pos] != '\\' || buf[pos + 1] != 'u') {
                        throw errorAt("unpaired surrogate in \\u escape", at);
                    }
                    pos += 2;
                    char low = readHex4(pos - 2);
                    if (!Character.isLowSurrogate(low)) {
                        throw errorAt("unpaired surrogate in \\u escape", at);
                    }
                    sb.append(ch).append(low);
                } else if (Character.isLowSurrogate(ch)) {
                    throw errorAt("unpaired surrogate in \\u escape", at);
                } else {
                    sb.append(ch);
                }
            }
            default -> throw errorAt("invalid escape \\" + (char) (c & 0xFF), at);
        }
    }

    private char readHex4(int escapeAt) {
        if (end - pos < 4) {
            throw errorAt("truncated \\u escape", escapeAt);
        }
        int v = 0;
        for (int i = 0; i < 4; i++) {
            int d = Character.digit(buf[pos + i], 16);
            if (d < 0) {
                throw errorAt("invalid hex digit in \\u escape", pos + i);
            }
            v = (v << 4) | d;
        }
        pos += 4;
        return (char) v;
    }

    /** Decodes one multi-byte UTF-8 sequence at {@code pos}, rejecting overlong forms, surrogates and > U+10FFFF. */
    private int readUtf8() {
        int at = pos;
        int b0 = buf[pos] & 0xFF;
        int n;
        int cp;
        int min;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            n = 1;
            cp = b0 & 0x1F;
            min = 0x80;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            n = 2;
            cp = b0 & 0x0F;
            min = 0x800;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            n = 3;
            cp = b0 & 0x07;
            min = 0x10000;
        } else {
            throw errorAt("invalid UTF-8 byte 0x" + Integer.toHexString(b0), at);
        }
        if (end - pos <= n) {
            throw errorAt("truncated UTF-8 sequence", at);
        }
        for (int i = 1; i <= n; i++) {
            int b = buf[pos + i] & 0xFF;
            if ((b & 0xC0) != 0x80) {
                throw errorAt("invalid UTF-8 continuation byte 0x" + Integer.toHexString(b), pos + i);
            }
            cp = (cp << 6) | (b & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            throw errorAt("invalid UTF-8 sequence (overlong, surrogate or out of range)", at);
        }
        pos += n + 1;
        return cp;
    }

    private static String describeByte(int c) {
        c &= 0xFF;
        return c >= 0x21 && c < 0x7F ? "'" + (char) c + "'" : String.format("0x%02x", c);
    }

    /**
     * The keys of one object, to find duplicates. Most objects have a few keys: a short array scanned linearly. Past
     * that, an open-addressing table of the strings themselves (their hash codes are cached and reused by the map the
     * caller builds): a HashSet per object, or one with a node per key in a 100 MB header, dominated the parse.
     */
    private static final class Keys {
        private final String[] few = new String[8];
        private int n;
        private String[] table;
        private int shift;

        void clear() {
            Arrays.fill(few, 0, Math.min(n, few.length), null);
            n = 0;
            table = null;
        }

        /** False if the key was already there. */
        boolean add(String key) {
            if (table == null) {
                for (int i = 0; i < n; i++) {
                    if (few[i].equals(key)) {
                        return false;
                    }
                }
                if (n < few.length) {
                    few[n++] = key;
                    return true;
                }
                table = new String[32];
                shift = 32 - 5;
                for (String k : few) {
                    insert(table, shift, k);
                }
            }
            if (2 * (n + 1) > table.length) {
                String[] bigger = new String[table.length * 2];
                int biggerShift = shift - 1;
                for (String k : table) {
                    if (k != null) {
                        insert(bigger, biggerShift, k);
                    }
                }
                table = bigger;
                shift = biggerShift;
            }
            int h = key.hashCode();
            int mask = table.length - 1;
            for (int i = (h * 0x9E3779B9) >>> shift; ; i = (i + 1) & mask) {
                String k = table[i];
                if (k == null) {
                    table[i] = key;
                    n++;
                    return true;
                }
                if (k.hashCode() == h && k.equals(key)) {
                    return false;
                }
            }
        }

        /** Places a key known to be absent (Fibonacci hashing, linear probing). */
        private static void insert(String[] table, int shift, String key) {
            int mask = table.length - 1;
            int i = (key.hashCode() * 0x9E3779B9) >>> shift;
            while (table[i] != null) {
                i = (i + 1) & mask;
            }
            table[i] = key;
        }
    }
}

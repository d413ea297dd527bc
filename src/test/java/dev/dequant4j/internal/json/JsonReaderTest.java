package dev.dequant4j.internal.json;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class JsonReaderTest {

    private static JsonException parseError(byte[] utf8) {
        return assertThrows(JsonException.class, () -> Json.parse(utf8));
    }

    private static JsonException parseError(String text) {
        return parseError(text.getBytes(StandardCharsets.UTF_8));
    }

    private static byte[] bytes(int... b) {
        byte[] out = new byte[b.length];
        for (int i = 0; i < b.length; i++) {
            out[i] = (byte) b[i];
        }
        return out;
    }

    /** A document made of ASCII text around raw bytes. */
    private static byte[] concat(String before, byte[] raw, String after) {
        byte[] a = before.getBytes(StandardCharsets.US_ASCII);
        byte[] c = after.getBytes(StandardCharsets.US_ASCII);
        byte[] out = new byte[a.length + raw.length + c.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(raw, 0, out, a.length, raw.length);
        System.arraycopy(c, 0, out, a.length + raw.length, c.length);
        return out;
    }

    @Test
    void objectsKeepSourceKeyOrder() {
        JsonObject o = (JsonObject) Json.parse("{\"z\":1,\"a\":2,\"m\":{\"y\":true,\"b\":null},\"c\":[3,\"x\"]}");
        assertEquals(List.of("z", "a", "m", "c"), List.copyOf(o.keys()));
        assertEquals(List.of("y", "b"), List.copyOf(o.getObject("m").keys()));
        assertEquals("{\"z\":1,\"a\":2,\"m\":{\"y\":true,\"b\":null},\"c\":[3,\"x\"]}",
                Json.write(o, Json.Style.COMPACT));
    }

    @Test
    void integersUpTo64BitsAreExact() {
        JsonArray a = (JsonArray) Json.parse("[9223372036854775807, -9223372036854775808, 0, -0, 123456789012345678,"
                + " 1234567890123456789, 9223372036854775808, -9223372036854775809, 100000000000000000000000]");
        long[] exact = {Long.MAX_VALUE, Long.MIN_VALUE, 0, 0, 123456789012345678L, 1234567890123456789L};
        for (int i = 0; i < exact.length; i++) {
            JsonNumber n = (JsonNumber) a.get(i);
            assertTrue(n.isLong(), n.text());
            assertEquals(exact[i], n.longValue());
            assertEquals(exact[i], n.toJava());
        }
        String[] wide = {"9223372036854775808", "-9223372036854775809", "100000000000000000000000"};
        for (int i = 0; i < wide.length; i++) {
            JsonNumber n = (JsonNumber) a.get(exact.length + i);
            assertFalse(n.isLong(), n.text());
            assertTrue(n.isIntegral(), n.text());
            assertEquals(wide[i], n.text());
            assertEquals(new BigInteger(wide[i]), n.toJava());
            assertThrows(JsonException.class, n::longValue);
        }
    }

    @Test
    void nonIntegersKeepTheirText() {
        String doc = "[1.0,1e5,1E+5,-0.0,2.50,6.0,0.050201416015625,1.7976931348623157e308,4.9e-324,1e400]";
        JsonArray a = (JsonArray) Json.parse(doc);
        assertEquals(doc, Json.write(a, Json.Style.COMPACT));
        assertEquals(1e5, ((JsonNumber) a.get(1)).doubleValue());
        assertEquals(0.050201416015625, ((JsonNumber) a.get(6)).doubleValue());
        assertEquals(Double.doubleToRawLongBits(-0.0), Double.doubleToRawLongBits(((JsonNumber) a.get(3)).doubleValue()));
        assertFalse(((JsonNumber) a.get(0)).isIntegral());
        assertEquals(Double.POSITIVE_INFINITY, ((JsonNumber) a.get(9)).doubleValue());
    }

    @Test
    void stringEscapesAndUtf8Decode() {
        String doc = "[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\", \"é€😀\", \"\\u0000\"]";
        JsonArray a = (JsonArray) Json.parse(doc);
        assertEquals("a\"b\\c/d\b\f\n\r\t", ((JsonString) a.get(0)).value());
        assertEquals("Aé€\uD83D\uDE00", ((JsonString) a.get(1)).value());
        assertEquals("é€\uD83D\uDE00", ((JsonString) a.get(2)).value());
        assertEquals("\0", ((JsonString) a.get(3)).value());
    }

    @Test
    void literalsAndWhitespace() {
        assertEquals(JsonBoolean.TRUE, Json.parse(" \t\r\ntrue\n"));
        assertEquals(JsonBoolean.FALSE, Json.parse("false"));
        assertEquals(JsonNull.NULL, Json.parse("null"));
        assertEquals(new JsonString(""), Json.parse("\"\""));
        assertEquals(new JsonArray(List.of()), Json.parse("[ ]"));
        assertEquals(JsonObject.empty(), Json.parse("{ }"));
    }

    /** Each malformed document fails with this exact message, including the byte offset of the problem. */
    @ParameterizedTest(name = "[{index}] <{0}>")
    @CsvSource(delimiter = '|', quoteCharacter = '`', value = {
        "``                 | empty JSON document at byte 0",
        "`   `              | empty JSON document at byte 3",
        "{                  | unexpected end of JSON, expected '\"' or '}' at byte 1",
        "[1,]               | unexpected character ']', expected a value at byte 3",
        "{\"a\":1,}         | expected a string key in object at byte 7",
        "{\"a\" 1}          | expected ':' after object key at byte 5",
        "{\"a\":1 \"b\":2}  | expected ',' or '}' in object at byte 7",
        "[1 2]              | expected ',' or ']' in array at byte 3",
        "{1:2}              | expected a string key in object at byte 1",
        "[01]               | invalid number: leading zero at byte 1",
        "[-]                | invalid number: expected a digit at byte 2",
        "[1.]               | invalid number: expected a digit after '.' at byte 3",
        "[.5]               | unexpected character '.', expected a value at byte 1",
        "[1e]               | invalid number: expected a digit in the exponent at byte 3",
        "[+1]               | unexpected character '+', expected a value at byte 1",
        "[tru]              | invalid literal, expected true at byte 1",
        "[nul               | invalid literal, expected null at byte 1",
        "[True]             | unexpected character 'T', expected a value at byte 1",
        "[NaN]              | unexpected character 'N', expected a value at byte 1",
        "[Infinity]         | unexpected character 'I', expected a value at byte 1",
        "{} {}              | unexpected data after the JSON value at byte 3",
        "1 2                | unexpected data after the JSON value at byte 2",
        "\"abc              | unterminated string at byte 0",
        "[\"a\\x\"]         | invalid escape \\x at byte 3",
        "[\"\\u12\"]        | invalid hex digit in \\u escape at byte 6",
        "[\"\\u12           | truncated \\u escape at byte 2",
        "[\"\\ud800\"]      | unpaired surrogate in \\u escape at byte 2",
        "[\"\\udc00\"]      | unpaired surrogate in \\u escape at byte 2",
        "[\"\\ud800\\u0041\"] | unpaired surrogate in \\u escape at byte 2",
        "{\"a\":1,\"a\":2}  | duplicate key \"a\" at byte 7",
        "[1]]               | unexpected data after the JSON value at byte 3",
        "'a'                | unexpected character ''', expected a value at byte 0",
    })
    void malformedDocumentsFailWithTheirOffset(String doc, String message) {
        JsonException e = parseError(doc);
        assertEquals(message, e.getMessage());
    }

    @Test
    void controlCharactersMustBeEscaped() {
        JsonException e = parseError(concat("[\"ab", bytes(0x0A), "\"]"));
        assertEquals("unescaped control character 0x0a in string at byte 4", e.getMessage());
        assertEquals(4, e.offset());
        e = parseError(concat("[\"x", bytes(0x1F), "\"]"));
        assertEquals("unescaped control character 0x1f in string at byte 3", e.getMessage());
        // a backslash at the very end of the input
        assertEquals("unterminated escape at byte 3", parseError("[\"a\\").getMessage());
        // DEL is not a control character for JSON
        assertEquals(new JsonString("\u007f"), Json.parse(concat("\"", bytes(0x7F), "\"")));
    }

    @Test
    void invalidUtf8IsRejectedWithItsOffset() {
        Object[][] cases = {
            {bytes(0x80), "invalid UTF-8 byte 0x80 at byte 3"},                         // lone continuation
            {bytes(0xC0, 0x80), "invalid UTF-8 byte 0xc0 at byte 3"},                   // overlong NUL
            {bytes(0xC1, 0xBF), "invalid UTF-8 byte 0xc1 at byte 3"},                   // overlong
            {bytes(0xE0, 0x80, 0x80), "invalid UTF-8 sequence (overlong, surrogate or out of range) at byte 3"},
            {bytes(0xED, 0xA0, 0x80), "invalid UTF-8 sequence (overlong, surrogate or out of range) at byte 3"},
            {bytes(0xF4, 0x90, 0x80, 0x80), "invalid UTF-8 sequence (overlong, surrogate or out of range) at byte 3"},
            {bytes(0xF5, 0x80, 0x80, 0x80), "invalid UTF-8 byte 0xf5 at byte 3"},
            {bytes(0xFF), "invalid UTF-8 byte 0xff at byte 3"},
            {bytes(0xC3, 0x28), "invalid UTF-8 continuation byte 0x28 at byte 4"},
            {bytes(0xE2, 0x82), "invalid UTF-8 continuation byte 0x22 at byte 5"},
        };
        for (Object[] c : cases) {
            JsonException e = parseError(concat("[\"a", (byte[]) c[0], "\"]"));
            assertEquals(c[1], e.getMessage());
        }
        // truncated at the very end of the input
        assertEquals("truncated UTF-8 sequence at byte 2", parseError(concat("[\"", bytes(0xE2, 0x82), "")).getMessage());
        // outside a string a non-ASCII byte is simply not JSON
        assertEquals("unexpected character 0xc3, expected a value at byte 1",
                parseError(concat("[", bytes(0xC3, 0xA9), "]")).getMessage());
        // the largest code point and the last ones before and after the surrogates are fine
        assertEquals(new JsonString("\uDBFF\uDFFF\uD7FF\uE000"),
                Json.parse(concat("\"", bytes(0xF4, 0x8F, 0xBF, 0xBF, 0xED, 0x9F, 0xBF, 0xEE, 0x80, 0x80), "\"")));
    }

    @Test
    void duplicateKeysAreAnErrorOnlyWithinOneObject() {
        JsonException e = parseError("{\"x\":{\"a\":1},\"y\":{\"a\":2,\"b\":{\"a\":3}},\"y\":0}");
        assertEquals("duplicate key \"y\" at byte 37", e.getMessage());
        assertEquals("y", e.duplicateKey());
        assertEquals(37, e.offset());
        // the same key in siblings, parents and children is fine
        assertInstanceOf(JsonObject.class, Json.parse("{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}"));
        // keys compare after unescaping
        assertEquals("duplicate key \"\u00e9\" at byte 12", parseError("{\"\\u00e9\":1,\"\u00e9\":2}").getMessage());
    }

    @Test
    void nestingDepthIsLimitedWithoutStackOverflow() {
        String ok = "[".repeat(JsonReader.DEFAULT_MAX_DEPTH) + "]".repeat(JsonReader.DEFAULT_MAX_DEPTH);
        assertInstanceOf(JsonArray.class, Json.parse(ok));
        String deep = "[".repeat(JsonReader.DEFAULT_MAX_DEPTH + 1) + "]".repeat(JsonReader.DEFAULT_MAX_DEPTH + 1);
        assertEquals("JSON nested deeper than 128 levels at byte 128", parseError(deep).getMessage());
        // a hostile document: a million open brackets
        JsonException e = parseError("{\"a\":".repeat(1_000_000));
        assertEquals("JSON nested deeper than 128 levels at byte " + 128 * 5, e.getMessage());

        JsonReader r = new JsonReader("[[[1]]]".getBytes(StandardCharsets.US_ASCII), 0, 7, 2, 0);
        r.beginArray();
        r.beginArray();
        assertEquals("JSON nested deeper than 2 levels at byte 2",
                assertThrows(JsonException.class, r::beginArray).getMessage());
    }

    @Test
    void offsetsCountFromTheBaseOffsetOfASlice() {
        byte[] buf = "xxxx{\"a\":tru}yy".getBytes(StandardCharsets.US_ASCII);
        JsonReader r = new JsonReader(buf, 4, 13, 8, 1000);
        JsonException e = assertThrows(JsonException.class, r::nextValue);
        assertEquals("invalid literal, expected true at byte 1005", e.getMessage());
        assertEquals(1005, e.offset());
        // the reader never looks outside its slice
        JsonReader whole = new JsonReader("[1,2]]".getBytes(StandardCharsets.US_ASCII), 0, 5, 8, 0);
        assertEquals(List.of(1L, 2L), whole.nextValue().toJava());
        whole.endDocument();
    }

    @Test
    void pullApiReadsTypedValuesAndSkips() {
        JsonReader r = new JsonReader("{\"n\":-42,\"s\":\"v\",\"skip\":{\"deep\":[1,[2,{\"x\":null}]]},\"b\":false,\"z\":null}"
                .getBytes(StandardCharsets.US_ASCII));
        r.beginObject();
        assertEquals("n", r.nextName());
        assertEquals(-42, r.nextLong());
        assertEquals("s", r.nextName());
        assertEquals("v", r.nextString());
        assertEquals("skip", r.nextName());
        r.skipValue();
        assertEquals("b", r.nextName());
        assertFalse(r.nextBoolean());
        assertEquals("z", r.nextName());
        r.nextNull();
        assertFalse(r.hasNext());
        r.endObject();
        r.endDocument();

        JsonReader typed = new JsonReader("[1.5, \"x\", 99999999999999999999]".getBytes(StandardCharsets.US_ASCII));
        typed.beginArray();
        assertEquals("expected an integer in the 64-bit range but found 1.5 at byte 1",
                assertThrows(JsonException.class, typed::nextLong).getMessage());
        assertEquals("expected an integer but found a string at byte 6",
                assertThrows(JsonException.class, typed::nextLong).getMessage());
        typed.nextString();
        assertEquals("expected an integer in the 64-bit range but found 99999999999999999999 at byte 11",
                assertThrows(JsonException.class, typed::nextLong).getMessage());
    }

    @Test
    void typedGettersNameTheKey() {
        JsonObject o = Json.parseObject("{\"a\":\"s\",\"n\":1.5,\"big\":18446744073709551615,\"o\":{}}"
                .getBytes(StandardCharsets.US_ASCII));
        assertEquals("missing field 'x'", assertThrows(JsonException.class, () -> o.require("x")).getMessage());
        assertEquals("field 'a' must be an integer, not the string \"s\"",
                assertThrows(JsonException.class, () -> o.getLong("a")).getMessage());
        assertEquals("field 'n' must be an integer, not the number 1.5",
                assertThrows(JsonException.class, () -> o.getLong("n")).getMessage());
        assertEquals("field 'big' must be an integer, not the number 18446744073709551615",
                assertThrows(JsonException.class, () -> o.getLong("big")).getMessage());
        assertEquals("field 'o' must be a string, not an object",
                assertThrows(JsonException.class, () -> o.getString("o")).getMessage());
        assertEquals(1.5, o.getDouble("n"));
        assertEquals("expected a JSON object at byte 0",
                assertThrows(JsonException.class, () -> Json.parseObject("[]".getBytes(StandardCharsets.US_ASCII)))
                        .getMessage());
    }

    @Test
    void readObjectChecksTheSizeBeforeReading(@TempDir Path dir) throws IOException {
        Path f = dir.resolve("config.json");
        Files.writeString(f, "{\"a\": [1, 2]}");
        assertEquals(Map.of("a", List.of(1L, 2L)), Json.readObject(f, 13).toJava());
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> Json.readObject(f, 12));
        assertEquals(f + ": is 13 bytes, more than the 12-byte limit for this file", e.getMessage());
        Files.writeString(f, "[1]");
        assertEquals("not a JSON object (the file does not start with '{')",
                assertThrows(JsonException.class, () -> Json.readObject(f, 100)).getMessage());
    }

    @Test
    void writesPythonJsonDumpsIndent2SortKeys() {
        // Expected text is what CPython 3 prints for json.dumps(obj, indent=2, sort_keys=True).
        JsonObject o = Json.parseObject(("{\"weight_map\":{\"b.weight\":\"f2\",\"a.weight\":\"f1\",\"a\":\"f0\"},"
                + "\"metadata\":{\"total_size\":120840,\"empty\":{},\"list\":[],\"l\":[1,2.5,true,null]},"
                + "\"u\":\"\u00e9\u2028\\u007f\uD83D\uDE00\\u0001\\\"\"}").getBytes(StandardCharsets.UTF_8));
        String expected = """
                {
                  "metadata": {
                    "empty": {},
                    "l": [
                      1,
                      2.5,
                      true,
                      null
                    ],
                    "list": [],
                    "total_size": 120840
                  },
                  "u": "\\u00e9\\u2028\\u007f\\ud83d\\ude00\\u0001\\"",
                  "weight_map": {
                    "a": "f0",
                    "a.weight": "f1",
                    "b.weight": "f2"
                  }
                }""";
        assertEquals(expected, Json.write(o, Json.Style.PYTHON_INDENT2_SORTED));
    }

    @Test
    void sortKeysUsesCodePointOrderAsPythonDoes() {
        // U+FF5E sorts before U+1F600 in Python (code points) but after it in UTF-16 order
        JsonObject o = Json.parseObject("{\"\uD83D\uDE00\":1,\"\uFF5E\":2,\"Z\":3,\"a\":4}".getBytes(StandardCharsets.UTF_8));
        assertEquals("{\"Z\":3,\"a\":4,\"\uFF5E\":2,\"\uD83D\uDE00\":1}",
                Json.write(o, new Json.Style(0, true, false)));
    }

    @Test
    void compactWriterEscapesOnlyWhatJsonRequires() {
        JsonString s = new JsonString("é\u007f\"\\\n\u001f/\uD83D\uDE00");
        String text = Json.write(s, Json.Style.COMPACT);
        assertEquals("\"é\u007f\\\"\\\\\\n\\u001f/\uD83D\uDE00\"", text);
        assertEquals(s, Json.parse(text));
    }
}

package dev.dequant4j.internal.json;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.Tuple;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;

/** Properties of the JSON reader and writer over generated documents, strings, numbers and garbage. */
class JsonPropertiesTest {

    @Provide
    Arbitrary<JsonValue> values() {
        return Arbitraries.recursive(this::leaves, this::containers, 0, 3);
    }

    @Provide
    Arbitrary<JsonValue> containerValues() {
        return containers(values());
    }

    private Arbitrary<JsonValue> leaves() {
        return Arbitraries.oneOf(
                strings().map(JsonString::new),
                Arbitraries.longs().map(JsonNumber::of),
                Arbitraries.doubles().map(JsonNumber::of),
                numberTexts().map(JsonNumber::ofText),
                Arbitraries.of(JsonBoolean.TRUE, JsonBoolean.FALSE, JsonNull.NULL));
    }

    private Arbitrary<JsonValue> containers(Arbitrary<JsonValue> element) {
        Arbitrary<JsonValue> arrays = element.list().ofMaxSize(4).map(JsonArray::new);
        Arbitrary<JsonValue> objects = Combinators.combine(strings().list().uniqueElements().ofMaxSize(4),
                element.list().ofSize(4)).as((keys, vals) -> {
                    Map<String, JsonValue> m = new LinkedHashMap<>();
                    for (int i = 0; i < keys.size(); i++) {
                        m.put(keys.get(i), vals.get(i));
                    }
                    return new JsonObject(m);
                });
        return Arbitraries.oneOf(arrays, objects);
    }

    /** Any valid Unicode text: code points from every plane, no unpaired surrogates. */
    @Provide
    Arbitrary<String> strings() {
        Arbitrary<Integer> cp = Arbitraries.frequencyOf(
                Tuple.of(4, Arbitraries.integers().between(0x20, 0x7E)),
                Tuple.of(1, Arbitraries.integers().between(0, 0x1F)),
                Tuple.of(1, Arbitraries.integers().between(0x7F, 0xD7FF)),
                Tuple.of(1, Arbitraries.integers().between(0xE000, 0x10FFFF)));
        return cp.list().ofMaxSize(12).map(l -> {
            StringBuilder sb = new StringBuilder();
            l.forEach(sb::appendCodePoint);
            return sb.toString();
        });
    }

    /** Non-integer numbers in every shape RFC 8259 allows. */
    private Arbitrary<String> numberTexts() {
        Arbitrary<String> intPart = Arbitraries.oneOf(Arbitraries.just("0"),
                Arbitraries.strings().withCharRange('0', '9').ofMinLength(1).ofMaxLength(25)
                        .filter(s -> s.charAt(0) != '0'));
        Arbitrary<String> frac = Arbitraries.strings().withCharRange('0', '9').ofMinLength(1).ofMaxLength(20)
                .map(s -> "." + s);
        Arbitrary<String> exp = Combinators.combine(Arbitraries.of("e", "E"), Arbitraries.of("", "+", "-"),
                Arbitraries.strings().withCharRange('0', '9').ofMinLength(1).ofMaxLength(4)).as((a, b, c) -> a + b + c);
        return Combinators.combine(Arbitraries.of("", "-"), intPart, frac.injectNull(0.3), exp.injectNull(0.5))
                .as((sign, i, f, e) -> sign + i + (f == null ? "" : f) + (e == null ? "" : e))
                .filter(s -> s.contains(".") || s.contains("e") || s.contains("E"));
    }

    @Property
    void compactWriteThenParseIsTheIdentityWithKeyOrder(@ForAll("values") JsonValue v) {
        String text = Json.write(v, Json.Style.COMPACT);
        JsonValue back = Json.parse(text);
        assertEquals(v, back);
        assertEquals(text, Json.write(back, Json.Style.COMPACT), "key order and number text survive");
    }

    @Property
    void pythonStylesParseBackToTheSameValue(@ForAll("values") JsonValue v) {
        for (Json.Style style : List.of(Json.Style.PYTHON_INDENT2, Json.Style.PYTHON_INDENT2_SORTED)) {
            String text = Json.write(v, style);
            for (int i = 0; i < text.length(); i++) {
                assertTrue(text.charAt(i) < 0x7F, "ensure_ascii output is ASCII: " + text);
            }
            assertEquals(v, Json.parse(text));
        }
    }

    @Property
    void everyLongIsExact(@ForAll long value) {
        JsonNumber n = (JsonNumber) Json.parse(Long.toString(value));
        assertTrue(n.isLong());
        assertEquals(value, n.longValue());
        JsonObject o = Json.parseObject(("{\"v\":" + value + "}").getBytes(StandardCharsets.US_ASCII));
        assertEquals(value, o.getLong("v"));
    }

    @Property
    void integersBeyond64BitsKeepTheirText(@ForAll @IntRange(min = 1, max = 200) int extraBits, @ForAll boolean neg) {
        BigInteger big = BigInteger.ONE.shiftLeft(62 + extraBits).add(BigInteger.valueOf(extraBits));
        if (neg) {
            big = big.negate().subtract(BigInteger.ONE);
        }
        JsonNumber n = (JsonNumber) Json.parse(big.toString());
        assertFalse(n.isLong());
        assertEquals(big, n.toJava());
        assertEquals(big.toString(), n.text());
    }

    @Property
    void stringsRoundTripWithAndWithoutEnsureAscii(@ForAll("strings") String s) {
        for (boolean ascii : new boolean[] {false, true}) {
            StringBuilder sb = new StringBuilder();
            Json.writeString(sb, s, ascii);
            assertEquals(new JsonString(s), Json.parse(sb.toString()));
        }
    }

    /** Raw bytes inside quotes decode exactly as the JDK's strict UTF-8 decoder does, or both reject them. */
    @Property
    void utf8DecodingAgreesWithTheJdk(@ForAll @Size(max = 16) byte[] raw) {
        byte[] doc = new byte[raw.length + 2];
        doc[0] = '"';
        int n = 1;
        for (byte b : raw) {
            if (b != '"' && b != '\\' && (b < 0 || b >= 0x20)) {
                doc[n++] = b;
            }
        }
        doc[n++] = '"';
        byte[] text = java.util.Arrays.copyOf(doc, n);
        String expected;
        try {
            expected = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(text, 1, n - 2)).toString();
        } catch (CharacterCodingException e) {
            expected = null;
        }
        if (expected == null) {
            JsonException e = assertThrows(JsonException.class, () -> Json.parse(text));
            assertTrue(e.getMessage().contains("UTF-8"), e.getMessage());
        } else {
            assertEquals(new JsonString(expected), Json.parse(text));
        }
    }

    /** Garbage never escapes as anything but a JsonException with an offset inside the input. */
    @Property(tries = 2000)
    void garbageFailsCleanly(@ForAll("garbage") byte[] input) {
        try {
            Json.parse(input);
        } catch (JsonException e) {
            assertTrue(e.offset() >= 0 && e.offset() <= input.length, e.getMessage());
        }
    }

    /** Mostly JSON-ish bytes, so the parser gets deep before it fails. */
    @Provide
    Arbitrary<byte[]> garbage() {
        Arbitrary<Byte> jsonish = Arbitraries.of(toList("{}[]\":,\\ \n0123456789-+.eEtruefalsnu"));
        Arbitrary<Byte> any = Arbitraries.bytes();
        return Arbitraries.frequencyOf(Tuple.of(4, jsonish), Tuple.of(1, any))
                .list().ofMaxSize(40).map(l -> {
                    byte[] b = new byte[l.size()];
                    for (int i = 0; i < b.length; i++) {
                        b[i] = l.get(i);
                    }
                    return b;
                });
    }

    private static List<Byte> toList(String chars) {
        List<Byte> l = new ArrayList<>();
        for (byte b : chars.getBytes(StandardCharsets.US_ASCII)) {
            l.add(b);
        }
        return l;
    }

    /** A proper prefix of an array or object is never a complete document. */
    @Property
    void everyProperPrefixOfAContainerFails(@ForAll("containerValues") JsonValue v,
                                            @ForAll @IntRange(min = 0, max = 10_000) int cutSeed) {
        byte[] full = Json.write(v, Json.Style.COMPACT).getBytes(StandardCharsets.UTF_8);
        int cut = cutSeed % full.length;
        byte[] prefix = java.util.Arrays.copyOf(full, cut);
        JsonException e = assertThrows(JsonException.class, () -> Json.parse(prefix));
        assertTrue(e.offset() >= 0 && e.offset() <= cut, e.getMessage());
    }

    /** Repeating any key of an object, anywhere in it, is reported with that key. */
    @Property
    void aRepeatedKeyIsAlwaysFound(@ForAll("strings") String key, @ForAll @Size(max = 6) List<@IntRange(max = 9) Integer> others,
                                   @ForAll @IntRange(max = 7) int at) {
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < others.size(); i++) {
            keys.add("k" + i + "_" + others.get(i));
        }
        keys.add(Math.min(at, keys.size()), key);
        keys.add(keys.size() > 0 ? (at * 31) % (keys.size() + 1) : 0, key);
        StringBuilder doc = new StringBuilder("{");
        for (int i = 0; i < keys.size(); i++) {
            if (i > 0) {
                doc.append(',');
            }
            Json.writeString(doc, keys.get(i), false);
            doc.append(":[").append(i).append(']');
        }
        doc.append('}');
        JsonException e = assertThrows(JsonException.class, () -> Json.parse(doc.toString()));
        assertEquals(key, e.duplicateKey());
    }

    /**
     * Objects of up to 300 keys from a small alphabet: the tree builder (which checks keys against its own map) and
     * the pull reader's skip (which keeps the keys itself, in an array and then a hash table) both report the first
     * repeated key at its offset, as a HashSet oracle finds it.
     */
    @Property(tries = 300)
    void firstDuplicateIsFoundByTreeAndSkip(@ForAll @Size(max = 300) List<@IntRange(max = 400) Integer> ids,
                                            @ForAll boolean nested) {
        StringBuilder doc = new StringBuilder(nested ? "[{\"outer\":{" : "{");
        java.util.Set<String> seen = new java.util.HashSet<>();
        String firstDup = null;
        long dupAt = -1;
        for (int i = 0; i < ids.size(); i++) {
            if (i > 0) {
                doc.append(',');
            }
            String key = "key" + ids.get(i);
            if (firstDup == null && !seen.add(key)) {
                firstDup = key;
                dupAt = doc.length();
            }
            doc.append('"').append(key).append("\":{\"key1\":").append(i).append('}');
        }
        doc.append(nested ? "}}]" : "}");
        byte[] bytes = doc.toString().getBytes(StandardCharsets.US_ASCII);
        if (firstDup == null) {
            Json.parse(bytes);
            JsonReader r = new JsonReader(bytes);
            r.skipValue();
            r.endDocument();
            return;
        }
        JsonException tree = assertThrows(JsonException.class, () -> Json.parse(bytes));
        JsonException skip = assertThrows(JsonException.class, () -> new JsonReader(bytes).skipValue());
        for (JsonException e : List.of(tree, skip)) {
            assertEquals(firstDup, e.duplicateKey());
            assertEquals(dupAt, e.offset());
        }
    }

    @Property(tries = 200)
    void depthLimitIsExact(@ForAll @IntRange(min = 1, max = 300) int depth, @ForAll boolean objects) {
        String open = objects ? "{\"k\":" : "[";
        String close = objects ? "}" : "]";
        String doc = open.repeat(depth - 1) + (objects ? "{}" : "[]") + close.repeat(depth - 1);
        if (depth <= JsonReader.DEFAULT_MAX_DEPTH) {
            Json.parse(doc);
        } else {
            JsonException e = assertThrows(JsonException.class, () -> Json.parse(doc));
            assertEquals("JSON nested deeper than 128 levels at byte " + (long) open.length() * 128, e.getMessage());
        }
    }
}

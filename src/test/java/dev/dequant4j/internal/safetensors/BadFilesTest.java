package dev.dequant4j.internal.safetensors;

import static dev.dequant4j.RawSafetensors.entry;
import static dev.dequant4j.RawSafetensors.file;
import static dev.dequant4j.RawSafetensors.header;
import static dev.dequant4j.RawSafetensors.raw;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.RawSafetensors;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The corpus of broken safetensors files. Each is built in a temporary directory from the table below, and must
 * fail with exactly its one-line message, naming the file and, where the problem is in one tensor, that tensor.
 * JSON byte offsets are file offsets (8 + the position in the header), found in the test by searching the header.
 */
class BadFilesTest {
    @TempDir
    static Path dir;

    /** One broken file: its bytes, the tensor the error must name (or null) and the exact detail. */
    record Bad(String id, byte[] bytes, String tensor, String detail) {
        @Override
        public String toString() {
            return id;
        }
    }

    private static final byte[] EIGHT = new byte[8];
    private static final String A = entry("a", "F32", "[2]", 0, 8);

    /** File offset of the first occurrence of {@code marker} at or after {@code from} in {@code header}. */
    private static long at(String header, String marker, int from) {
        int i = header.indexOf(marker, from);
        if (i < 0) {
            throw new IllegalArgumentException(marker + " not in " + header);
        }
        return 8 + header.substring(0, i).getBytes(StandardCharsets.UTF_8).length;
    }

    private static long at(String header, String marker) {
        return at(header, marker, 0);
    }

    static Stream<Bad> corpus() {
        List<Bad> c = new ArrayList<>();
        c.add(new Bad("empty file", new byte[0], null, "file is 0 bytes, too small to be safetensors (truncated?)"));
        c.add(new Bad("shorter than the length prefix", new byte[] {5, 0, 0}, null,
                "file is 3 bytes, too small to be safetensors (truncated?)"));

        byte[] valid = file(header(A), EIGHT);
        long n = valid.length - 8 - 8;
        c.add(new Bad("truncated header", Arrays.copyOf(valid, 8 + 10), null,
                "header length " + n + " runs past the end of the file (18 bytes; truncated download?)"));
        c.add(new Bad("header length beyond the file", raw(1_000_000, header(A).getBytes(StandardCharsets.UTF_8), EIGHT),
                null, "header length 1000000 runs past the end of the file (" + valid.length
                + " bytes; truncated download?)"));
        c.add(new Bad("header length 2^63", raw(Long.MIN_VALUE, header(A).getBytes(StandardCharsets.UTF_8), EIGHT), null,
                "header length 9223372036854775808 exceeds the safetensors limit of 100000000 bytes"
                        + " (corrupt or not safetensors)"));
        c.add(new Bad("header length 2^64-1", raw(-1, header(A).getBytes(StandardCharsets.UTF_8), EIGHT), null,
                "header length 18446744073709551615 exceeds the safetensors limit of 100000000 bytes"
                        + " (corrupt or not safetensors)"));
        c.add(new Bad("header length over 100 MB", raw(100_000_001, header(A).getBytes(StandardCharsets.UTF_8), EIGHT),
                null, "header length 100000001 exceeds the safetensors limit of 100000000 bytes"
                + " (corrupt or not safetensors)"));
        c.add(new Bad("truncated data", Arrays.copyOf(valid, valid.length - 4), "a",
                "data_offsets [0, 8] run past the end of the file (data section is 4 bytes; truncated?)"));

        String notStart = "header does not start with '{' (not a safetensors file?)";
        c.add(new Bad("JSON that is an array", file("[{\"a\":1}]", new byte[0]), null, notStart));
        c.add(new Bad("JSON that is a string", file("\"{}\"", new byte[0]), null, notStart));
        c.add(new Bad("leading whitespace", file(" " + header(A), EIGHT), null, notStart));
        c.add(new Bad("header length zero", raw(0, new byte[0], EIGHT), null, notStart));

        String h = header(entry("a", "F32", "[2]", 0, 8)).replace("\"a\"", "\"a\uFFFF\"");
        byte[] hb = h.getBytes(StandardCharsets.UTF_8);
        int bad = indexOf(hb, (byte) 0xEF);
        hb[bad] = (byte) 0xFF;
        c.add(new Bad("invalid UTF-8 in a name", raw(hb.length, hb, EIGHT), null,
                "invalid header JSON: invalid UTF-8 byte 0xff at byte " + (8 + bad)));
        String ovl = header(entry("a", "F32", "[2]", 0, 8));
        String ovlText = ovl.replace("\"F32\"", "\"F3__\"");
        byte[] ob = ovlText.getBytes(StandardCharsets.UTF_8);
        int o = ovlText.indexOf("F3__") + 2;
        ob[o] = (byte) 0xC0;
        ob[o + 1] = (byte) 0xB2;
        c.add(new Bad("overlong UTF-8 in a dtype", raw(ob.length, ob, EIGHT), "a",
                "invalid header JSON: invalid UTF-8 byte 0xc0 at byte " + (8 + o)));

        h = "{\"__metadata__\":{\"format\":\"pt\"},\"a\":1}";
        c.add(new Bad("tensor entry that is not an object", file(h, new byte[0]), "a",
                "invalid header JSON: tensor entry must be an object at byte " + at(h, "1}")));
        h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}";
        c.add(new Bad("trailing comma", file(h, EIGHT), "a",
                "invalid header JSON: expected a string key in object at byte " + at(h, "}}")));
        h = header(A) + "x";
        c.add(new Bad("data after the header object", file(h, EIGHT), null,
                "invalid header JSON: unexpected data after the JSON value at byte " + at(h, "x")));
        h = header(A).substring(0, header(A).length() - 1);
        c.add(new Bad("unclosed header object", file(h, EIGHT), null,
                "invalid header JSON: unexpected end of JSON, expected ',' or '}' at byte " + (8 + h.length())));

        c.add(new Bad("unknown dtype", file(header(entry("a", "F128", "[2]", 0, 8)), EIGHT), "a",
                "unknown dtype 'F128' (not one of the safetensors dtypes)"));
        c.add(new Bad("lower-case dtype", file(header(entry("a", "f32", "[2]", 0, 8)), EIGHT), "a",
                "unknown dtype 'f32' (not one of the safetensors dtypes)"));
        h = header("\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}");
        c.add(new Bad("dtype that is not a string", file(h, EIGHT), "a",
                "invalid header JSON: dtype must be a string at byte " + at(h, "32")));

        c.add(new Bad("overlapping offsets",
                file(header(A, entry("b", "F32", "[1]", 4, 8)), EIGHT), "b",
                "data_offsets [4, 8] overlap tensor 'a' (which ends at 8)"));
        c.add(new Bad("same offsets twice",
                file(header(A, entry("b", "F32", "[2]", 0, 8)), EIGHT), "b",
                "data_offsets [0, 8] overlap tensor 'a' (which ends at 8)"));
        c.add(new Bad("a hole", file(header(A, entry("b", "F32", "[1]", 12, 16)), new byte[16]), "b",
                "hole of 4 bytes in the data section before this tensor (data_offsets start at 12)"));
        c.add(new Bad("a hole at the start", file(header(entry("a", "F32", "[2]", 4, 12)), new byte[12]), "a",
                "hole of 4 bytes in the data section before this tensor (data_offsets start at 4)"));
        c.add(new Bad("trailing bytes", file(header(A), new byte[12]), null,
                "4 trailing bytes after the last tensor (the data section is 12 bytes, the tensors cover 8)"));
        c.add(new Bad("data but no tensors", file(header(), new byte[3]), null,
                "3 trailing bytes after the last tensor (the data section is 3 bytes, the tensors cover 0)"));
        c.add(new Bad("end - begin smaller than the shape", file(header(entry("a", "F32", "[2]", 0, 6)), new byte[6]),
                "a", "data_offsets [0, 6] hold 6 bytes but F32[2] needs 8"));
        c.add(new Bad("end - begin larger than the shape", file(header(entry("a", "BF16", "[2, 3]", 0, 16)),
                new byte[16]), "a", "data_offsets [0, 16] hold 16 bytes but BF16[2, 3] needs 12"));
        c.add(new Bad("end before begin", file(header(entry("a", "F32", "[0]", 8, 0)), EIGHT), "a",
                "data_offsets [8, 0] end before they begin"));
        c.add(new Bad("offsets past the data", file(header(entry("a", "F32", "[4]", 0, 16)), EIGHT), "a",
                "data_offsets [0, 16] run past the end of the file (data section is 8 bytes; truncated?)"));
        c.add(new Bad("negative offset", file(header(entry("a", "F32", "[2]", -8, 0)), EIGHT), "a",
                "negative data offset -8"));
        h = header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551616]}");
        c.add(new Bad("offset beyond 64 bits", file(h, EIGHT), "a",
                "invalid header JSON: expected an integer in the 64-bit range but found 18446744073709551616 at byte "
                        + at(h, "1844")));
        h = header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}");
        c.add(new Bad("three offsets", file(h, EIGHT), "a",
                "invalid header JSON: data_offsets must have exactly two entries at byte " + at(h, "8]}")));
        h = header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}");
        c.add(new Bad("one offset", file(h, EIGHT), "a",
                "invalid header JSON: data_offsets must have exactly two entries at byte " + (at(h, "]}") + 1)));
        h = header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"begin\":0}}");
        c.add(new Bad("offsets that are an object", file(h, EIGHT), "a",
                "invalid header JSON: data_offsets must be an array of two integers at byte " + at(h, "{\"begin")));

        c.add(new Bad("negative dimension", file(header(entry("a", "F32", "[-1,2]", 0, 8)), EIGHT), "a",
                "negative dimension in shape [-1, 2]"));
        c.add(new Bad("element count overflows 64 bits",
                file(header(entry("a", "U8", "[4294967296,4294967296]", 0, 8)), EIGHT), "a",
                "shape [4294967296, 4294967296] has more elements than fit in 64 bits"));
        c.add(new Bad("byte count overflows 64 bits",
                file(header(entry("a", "F32", "[4611686018427387904]", 0, 8)), EIGHT), "a",
                "shape [4611686018427387904] of F32 is not a whole number of bytes or overflows 64 bits"));
        c.add(new Bad("F4 with an odd element count", file(header(entry("a", "F4", "[3]", 0, 2)), new byte[2]), "a",
                "shape [3] of F4 is not a whole number of bytes or overflows 64 bits"));
        c.add(new Bad("F6 with 2 elements", file(header(entry("a", "F6_E2M3", "[2]", 0, 2)), new byte[2]), "a",
                "shape [2] of F6_E2M3 is not a whole number of bytes or overflows 64 bits"));
        h = header(entry("a", "F32", "[2.0]", 0, 8));
        c.add(new Bad("fractional dimension", file(h, EIGHT), "a",
                "invalid header JSON: expected an integer in the 64-bit range but found 2.0 at byte " + at(h, "2.0")));
        h = header(entry("a", "F32", "[" + "1,".repeat(64) + "2]", 0, 8));
        c.add(new Bad("rank above 64", file(h, EIGHT), "a",
                "invalid header JSON: shape has more than 64 dimensions at byte " + at(h, "2]")));
        h = header(entry("a", "F32", "2", 0, 8));
        c.add(new Bad("shape that is a number", file(h, EIGHT), "a",
                "invalid header JSON: shape must be an array of integers at byte " + at(h, "2,\"data")));

        c.add(new Bad("no dtype", file(header("\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}"), EIGHT), "a",
                "header entry has no dtype"));
        c.add(new Bad("no shape", file(header("\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}"), EIGHT), "a",
                "header entry has no shape"));
        c.add(new Bad("no offsets", file(header("\"a\":{\"dtype\":\"F32\",\"shape\":[2]}"), EIGHT), "a",
                "header entry has no data_offsets"));

        h = header(A, entry("b", "F32", "[1]", 8, 12), entry("a", "F32", "[1]", 12, 16));
        c.add(new Bad("duplicate names", file(h, new byte[16]), "a",
                "duplicate tensor name in the header (at byte " + at(h, "\"a\"", h.indexOf("\"b\"")) + ")"));
        h = "{\"__metadata__\":{\"format\":\"pt\"}," + A + ",\"__metadata__\":null}";
        c.add(new Bad("metadata twice", file(h, EIGHT), "__metadata__",
                "duplicate tensor name in the header (at byte " + at(h, "\"__metadata__\"", 5) + ")"));
        h = "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        c.add(new Bad("duplicate field in an entry", file(h, EIGHT), "a",
                "invalid header JSON: duplicate key \"dtype\" at byte " + at(h, "\"dtype\"", 10)));

        h = "{\"__metadata__\":{\"format\":1}," + A + "}";
        c.add(new Bad("metadata value that is not a string", file(h, EIGHT), null,
                "invalid header JSON: __metadata__ value for \"format\" must be a string at byte " + at(h, "1}")));
        h = "{\"__metadata__\":[\"pt\"]," + A + "}";
        c.add(new Bad("metadata that is not an object", file(h, EIGHT), null,
                "invalid header JSON: __metadata__ must be an object of strings at byte " + at(h, "[\"pt")));
        h = header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":" + "[".repeat(7) + "]".repeat(7)
                + "}");
        c.add(new Bad("header nested too deep", file(h, EIGHT), "a",
                "invalid header JSON: JSON nested deeper than 8 levels at byte " + (at(h, "[[[[[[[") + 6)));

        String lfs = "version https://git-lfs.github.com/spec/v1\n"
                + "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 120840\n";
        c.add(new Bad("Git LFS pointer", lfs.getBytes(StandardCharsets.US_ASCII), null,
                "this is a Git LFS pointer, not the weights: run git lfs pull"));
        c.add(new Bad("HTML error page", "\n<!DOCTYPE html>\n<html><body>404</body></html>".getBytes(StandardCharsets.US_ASCII),
                null, "this is an HTML page, not safetensors (a failed download?)"));
        return c.stream();
    }

    private static int indexOf(byte[] a, byte b) {
        for (int i = 0; i < a.length; i++) {
            if (a[i] == b) {
                return i;
            }
        }
        throw new IllegalArgumentException();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("corpus")
    void failsWithItsExactOneLineMessage(Bad bad) throws Exception {
        Path f = RawSafetensors.write(dir.resolve(bad.id().replace(' ', '-') + ".safetensors"), bad.bytes());
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(f).close());
        String expected = f + ": " + (bad.tensor() == null ? "" : "tensor '" + bad.tensor() + "': ") + bad.detail();
        assertEquals(expected, e.getMessage());
        assertEquals(Optional.of(f), e.file());
        assertEquals(Optional.ofNullable(bad.tensor()), e.tensor());
        assertEquals(bad.detail(), e.detail());
        assertEquals(-1, e.getMessage().indexOf('\n'));
        Files.delete(f);
    }

    @Test
    void notAFile() {
        Path missing = dir.resolve("missing.safetensors");
        assertEquals(missing + ": no such file",
                assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(missing)).getMessage());
        assertEquals(dir + ": is a directory, not a file",
                assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(dir)).getMessage());
    }

    @Test
    void controlCharactersInANameStayOnOneLine() {
        Path f = RawSafetensors.write(dir.resolve("ctl.safetensors"),
                file(header(entry("a\nb\rc", "F99", "[2]", 0, 8)), EIGHT));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(f));
        assertEquals(Optional.of("a\nb\rc"), e.tensor());
        assertEquals(f + ": tensor 'a?b?c': unknown dtype 'F99' (not one of the safetensors dtypes)", e.getMessage());
    }
}

package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.Channels;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The GGUF reader and writer against files written by llama.cpp's gguf-py (fixtures/gguf/README.md). */
class GgufFileTest {
    private static final Path NAME = Path.of("test.gguf");

    static Path fixture(String name) {
        try {
            return Path.of(GgufFileTest.class.getResource("/fixtures/gguf/container/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static byte[] bytes(String name) throws IOException {
        return Files.readAllBytes(fixture(name));
    }

    @Test
    void readsEveryMetadataTypeAsGgufPyWroteIt() {
        try (GgufFile f = GgufFile.open(fixture("all-types.gguf"))) {
            GgufMetadata m = f.metadata();
            assertEquals(3, f.version());
            assertEquals("llama", m.get("general.architecture").value());
            assertScalar(m, "t.uint8", GgufType.UINT8, 200);
            assertScalar(m, "t.int8", GgufType.INT8, -100);
            assertScalar(m, "t.uint16", GgufType.UINT16, 60000);
            assertScalar(m, "t.int16", GgufType.INT16, -30000);
            assertScalar(m, "t.uint32", GgufType.UINT32, 4000000000L);
            assertScalar(m, "t.int32", GgufType.INT32, -2000000000);
            assertScalar(m, "t.float32", GgufType.FLOAT32, 1.5f);
            assertScalar(m, "t.uint64", GgufType.UINT64, Long.parseUnsignedLong("18000000000000000000"));
            assertScalar(m, "t.int64", GgufType.INT64, -9000000000000000000L);
            assertScalar(m, "t.float64", GgufType.FLOAT64, 2.25);
            assertScalar(m, "t.bool", GgufType.BOOL, true);
            assertScalar(m, "t.string", GgufType.STRING, "héllo \u202e wörld");
            assertEquals(List.of("a", "", "ünï"), m.get("t.array.string").value());
            assertEquals(GgufType.STRING, m.get("t.array.string").elementType());
            assertArrayEquals(new int[] {1, -2, 3}, (int[]) m.get("t.array.int32").value());
            assertArrayEquals(new int[] {0, 255, 7}, (int[]) m.get("t.array.uint8").value());
            assertArrayEquals(new float[] {0.5f, -1f, Float.POSITIVE_INFINITY},
                    (float[]) m.get("t.array.float32").value());
            assertArrayEquals(new boolean[] {true, false}, (boolean[]) m.get("t.array.bool").value());
            assertArrayEquals(new long[] {1, -1}, (long[]) m.get("t.array.uint64").value());
            assertArrayEquals(new double[] {0.1}, (double[]) m.get("t.array.float64").value());
        }
    }

    private static void assertScalar(GgufMetadata m, String key, GgufType type, Object value) {
        assertEquals(type, m.get(key).type(), key);
        assertEquals(value, m.get(key).value(), key);
    }

    @Test
    void tensorLayoutIsGgufPys() throws IOException {
        byte[] raw = bytes("all-types.gguf");
        try (GgufFile f = GgufFile.open(fixture("all-types.gguf"))) {
            // gguf-py's GGUFReader on this file: data at 1056; name, type, ne, offset, bytes
            assertEquals(1056, f.dataOffset());
            assertEquals(32, f.alignment());
            Object[][] expected = {
                {"f32", GgmlType.F32, new long[] {5, 3}, 0L, 60L},
                {"f16", GgmlType.F16, new long[] {7, 2}, 64L, 28L},
                {"bf16", GgmlType.BF16, new long[] {3, 4}, 96L, 24L},
                {"q8_0", GgmlType.Q8_0, new long[] {64, 2}, 128L, 136L},
                {"q4_k", GgmlType.Q4_K, new long[] {256, 1}, 288L, 144L},
                {"i32.3d", GgmlType.I32, new long[] {4, 3, 2}, 448L, 96L},
                {"scalar", GgmlType.F32, new long[] {1}, 544L, 4L},
            };
            List<GgufFile.Tensor> ts = new ArrayList<>(f.tensors().values());
            assertEquals(expected.length, ts.size());
            for (int i = 0; i < expected.length; i++) {
                GgufFile.Tensor t = ts.get(i);
                assertEquals(expected[i][0], t.name());
                assertEquals(expected[i][1], t.type());
                assertArrayEquals((long[]) expected[i][2], t.ne());
                assertEquals(expected[i][3], t.offset());
                assertEquals(expected[i][4], t.byteSize());
            }
            GgufFile.Tensor i32 = f.tensors().get("i32.3d");
            ByteBuffer data = f.data(i32).asByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
            for (int k = 0; k < 24; k++) {
                assertEquals(k, data.getInt(k * 4));
            }
            assertEquals(ByteBuffer.wrap(raw, 1056 + 448, 96), f.data(i32).asByteBuffer());
        }
    }

    @Test
    void rewritingReproducesGgufPysBytes() throws IOException {
        for (String name : List.of("all-types.gguf", "aligned-64.gguf", "no-tensors.gguf")) {
            byte[] original = bytes(name);
            try (GgufFile f = GgufFile.open(fixture(name))) {
                List<GgufWriter.Planned> plan = new ArrayList<>();
                List<ByteBuffer> data = new ArrayList<>();
                for (GgufFile.Tensor t : f.tensors().values()) {
                    plan.add(new GgufWriter.Planned(t.name(), t.ne(), t.type()));
                    data.add(f.data(t).asByteBuffer());
                }
                GgufWriter w = new GgufWriter(f.metadata(), plan);
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                w.writeTo(Channels.newChannel(out), data);
                assertArrayEquals(original, out.toByteArray(), name);
                assertEquals(original.length, w.fileSize(), name);
                assertEquals(f.dataOffset(), w.dataOffset(), name);
            }
        }
    }

    @Test
    void customAlignmentIsHonoured() {
        try (GgufFile f = GgufFile.open(fixture("aligned-64.gguf"))) {
            assertEquals(64, f.alignment());
            assertEquals(0, f.dataOffset() % 64);
            assertEquals(64, f.tensors().get("b").offset());
        }
    }

    @Test
    @Timeout(60)
    void everyTruncationIsRefusedCleanlyButACutInsideTheFinalPadding() throws IOException {
        byte[] all = bytes("all-types.gguf");
        long lastEnd = 1056 + 544 + 4;
        for (int n = 0; n < all.length; n++) {
            byte[] cut = Arrays.copyOf(all, n);
            if (n >= lastEnd) {
                GgufFile.parse(NAME, cut);
            } else {
                Dequant4jException e = assertThrows(Dequant4jException.class, () -> GgufFile.parse(NAME, cut));
                assertTrue(e.getMessage().startsWith("test.gguf: "), e.getMessage());
            }
        }
    }

    @Test
    @Timeout(120)
    void everyHeaderByteMutationParsesOrIsRefusedWithOneLine() throws IOException {
        byte[] all = bytes("all-types.gguf");
        for (int i = 0; i < 1056; i++) {
            for (int v : new int[] {0x00, 0xFF, all[i] + 1, all[i] ^ 0x80}) {
                byte[] m = all.clone();
                m[i] = (byte) v;
                try {
                    GgufFile.parse(NAME, m);
                } catch (Dequant4jException e) {
                    assertTrue(e.getMessage().startsWith("test.gguf: ") && !e.getMessage().contains("\n"),
                            e.getMessage());
                }
            }
        }
    }

    @Test
    void refusesWhatGgmlWouldMisread() throws IOException {
        byte[] all = bytes("all-types.gguf");
        assertRefused(Arrays.copyOf(all, all.length + 1), "1 bytes follow the last tensor's data");
        byte[] bigEndian = all.clone();
        ByteBuffer.wrap(bigEndian).order(ByteOrder.BIG_ENDIAN).putInt(4, 3);
        assertRefused(bigEndian, "big-endian GGUF is not supported");
        byte[] v1 = all.clone();
        v1[4] = 1;
        assertRefused(v1, "GGUF version 1 is not supported");
        assertRefused("PK\3\4 not a gguf file".getBytes(StandardCharsets.US_ASCII), "no 'GGUF' magic");
        assertRefused(new byte[0], "no 'GGUF' magic");
    }

    @Test
    void refusesDuplicateKeysAndTensors() throws IOException {
        byte[] all = bytes("all-types.gguf");
        assertRefused(replace(all, "t.int16", "t.int32"), "metadata key 't.int32' appears twice");
        List<GgufWriter.Planned> twice = List.of(new GgufWriter.Planned("w", new long[] {4}, GgmlType.F32),
                new GgufWriter.Planned("w", new long[] {4}, GgmlType.F32));
        assertRefused(write(new GgufMetadata(), twice), "tensor 'w' appears twice");
    }

    @Test
    void refusesTensorsGgmlCannotHold() throws IOException {
        byte[] all = bytes("all-types.gguf");
        byte[] wrongType = all.clone();
        int typeAt = indexOf(all, "scalar") + 4 + 8;
        wrongType[typeAt] = 4;
        assertRefused(wrongType, "tensor 'scalar': unknown ggml type 4");
        byte[] partialBlock = all.clone();
        partialBlock[indexOf(all, "q8_0") + 4] = 63;
        assertRefused(partialBlock, "tensor 'q8_0': a row of 63 elements is not a whole number of Q8_0 blocks of 32");
        byte[] moved = all.clone();
        moved[typeAt + 4] += 32;
        assertRefused(moved, "tensor 'scalar': data offset 576, expected 544");
        byte[] fiveDims = all.clone();
        fiveDims[indexOf(all, "scalar")] = 5;
        assertRefused(fiveDims, "tensor 'scalar' has 5 dimensions, ggml allows at most 4");
        String longName = "x".repeat(64);
        assertRefused(rawTensorInfo(longName), "name is 64 bytes, ggml allows at most 63");
    }

    @Test
    @Timeout(60)
    void countsAndArraysAreBoundedBeforeAllocating() {
        byte[] huge = header(0, 1).kv("a", GgufType.ARRAY).u32(GgufType.UINT64.id).u64(1L << 40).bytes();
        assertRefused(huge, "metadata 'a' array length 1099511627776 is more than the file's");
        Builder bools = header(0, 1).kv("b", GgufType.ARRAY).u32(GgufType.BOOL.id).u64(GgufFile.MAX_ARRAY_ELEMENTS + 1);
        byte[] tooMany = Arrays.copyOf(bools.bytes(), bools.size() + (int) GgufFile.MAX_ARRAY_ELEMENTS + 1);
        assertRefused(tooMany, "array of 16777217 elements, more than the limit of 16777216");
        Builder strings = header(0, 1).kv("s", GgufType.ARRAY).u32(GgufType.STRING.id).u64(GgufFile.MAX_STRINGS);
        byte[] emptyStrings = Arrays.copyOf(strings.bytes(), strings.size() + 8 * (int) GgufFile.MAX_STRINGS);
        assertRefused(emptyStrings, "more than 4194304 strings in the metadata");
        assertRefused(header(Long.MAX_VALUE, 0).bytes(), "tensor count 9223372036854775807 is more than");
        byte[] nested = header(0, 1).kv("n", GgufType.ARRAY).u32(GgufType.ARRAY.id).u64(1).bytes();
        assertRefused(nested, "metadata 'n': nested arrays are not supported");
        byte[] badUtf8 = header(0, 1).u64(2).raw(new byte[] {(byte) 0xC3, 0x28}).u32(GgufType.BOOL.id).raw(new byte[] {1})
                .bytes();
        assertRefused(badUtf8, "metadata key at byte 32 is not valid UTF-8");
        byte[] notBool = header(0, 1).kv("b", GgufType.BOOL).raw(new byte[] {2}).bytes();
        assertRefused(notBool, "metadata 'b': boolean byte 2 is neither 0 nor 1");
        byte[] badAlignment = header(0, 1).kv("general.alignment", GgufType.UINT32).u32(48).bytes();
        assertRefused(badAlignment, "general.alignment 48 is not a power of two");
    }

    @Test
    @Timeout(10)
    void aFifoIsRefusedWithoutBlocking(@TempDir Path dir) throws Exception {
        Path fifo = dir.resolve("model.gguf");
        Process p = new ProcessBuilder("mkfifo", fifo.toString()).start();
        assertEquals(0, p.waitFor());
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> GgufFile.open(fifo));
        assertTrue(e.getMessage().startsWith(fifo + ": is not a regular file"), e.getMessage());
        assertTrue(!GgufFile.looksLikeGguf(fifo));
        assertTrue(GgufFile.looksLikeGguf(fixture("no-tensors.gguf")));
    }

    @Test
    void writerRefusesWhatItCannotLayOut() {
        GgufMetadata bad = new GgufMetadata().putUint32("general.alignment", 24);
        assertThrows(IllegalArgumentException.class, () -> new GgufWriter(bad, List.of()));
        assertThrows(IllegalArgumentException.class, () -> new GgufWriter(new GgufMetadata(),
                List.of(new GgufWriter.Planned("q", new long[] {33}, GgmlType.Q8_0))));
        assertThrows(IllegalArgumentException.class, () -> new GgufWriter(new GgufMetadata(),
                List.of(new GgufWriter.Planned("n".repeat(64), new long[] {1}, GgmlType.F32))));
    }

    private static void assertRefused(byte[] file, String part) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> GgufFile.parse(NAME, file));
        assertTrue(e.getMessage().contains(part), e.getMessage());
    }

    private static byte[] write(GgufMetadata m, List<GgufWriter.Planned> plan) throws IOException {
        GgufWriter w = new GgufWriter(m, plan);
        List<ByteBuffer> data = new ArrayList<>();
        for (GgufWriter.Planned p : plan) {
            data.add(ByteBuffer.allocate((int) p.byteSize()));
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        w.writeTo(Channels.newChannel(out), data);
        return out.toByteArray();
    }

    private static byte[] rawTensorInfo(String name) {
        return header(1, 0).string(name).u32(1).u64(1).u32(GgmlType.F32.id).u64(0).bytes();
    }

    private static int indexOf(byte[] all, String name) {
        byte[] needle = name.getBytes(StandardCharsets.UTF_8);
        for (int i = 8; i + needle.length <= all.length; i++) {
            if (ByteBuffer.wrap(all, i - 8, 8).order(ByteOrder.LITTLE_ENDIAN).getLong() == needle.length
                    && Arrays.equals(all, i, i + needle.length, needle, 0, needle.length)) {
                return i + needle.length;
            }
        }
        throw new AssertionError(name + " not found");
    }

    private static byte[] replace(byte[] all, String from, String to) {
        byte[] out = all.clone();
        int end = indexOf(all, from);
        byte[] b = to.getBytes(StandardCharsets.UTF_8);
        System.arraycopy(b, 0, out, end - b.length, b.length);
        return out;
    }

    private static Builder header(long tensors, long kvs) {
        return new Builder().u32(GgufFile.MAGIC).u32(3).u64(tensors).u64(kvs);
    }

    /** Raw little-endian bytes for files gguf-py would refuse to write. */
    private static final class Builder {
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();

        Builder u32(long v) {
            return raw(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) v).array());
        }

        Builder u64(long v) {
            return raw(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v).array());
        }

        Builder string(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            return u64(b.length).raw(b);
        }

        Builder kv(String key, GgufType type) {
            return string(key).u32(type.id);
        }

        Builder raw(byte[] b) {
            out.writeBytes(b);
            return this;
        }

        int size() {
            return out.size();
        }

        byte[] bytes() {
            return out.toByteArray();
        }
    }

    @Test
    void dataViewsAreZeroCopySlices() {
        try (GgufFile f = GgufFile.open(fixture("aligned-64.gguf"))) {
            Map<String, GgufFile.Tensor> ts = f.tensors();
            float[] a = f.data(ts.get("a")).toArray(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN));
            assertArrayEquals(new float[] {0, 1, 2}, a);
        }
    }
}

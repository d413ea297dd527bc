package dev.dequant4j.internal.safetensors;

import static dev.dequant4j.RawSafetensors.entry;
import static dev.dequant4j.RawSafetensors.file;
import static dev.dequant4j.RawSafetensors.header;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.RawSafetensors;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Valid files read as the safetensors specification (§1 of FORMATS.md) describes them. */
class SafetensorsFileTest {
    @TempDir
    Path dir;

    /** Bits per element of every dtype name in the spec, in the spec's order; written here, not taken from DType. */
    static final Object[][] SPEC_DTYPES = {
        {"BOOL", 8}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8}, {"I8", 8}, {"F8_E5M2", 8}, {"F8_E4M3", 8},
        {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16}, {"BF16", 16},
        {"I32", 32}, {"U32", 32}, {"F32", 32}, {"C64", 64}, {"F64", 64}, {"I64", 64}, {"U64", 64},
    };

    private static byte[] pattern(int n, int seed) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) (i * 31 + seed * 7 + 1);
        }
        return b;
    }

    @Test
    void everySpecDtypeIsRecognisedWithItsSize() {
        List<RawSafetensors.Tensor> tensors = new ArrayList<>();
        for (int i = 0; i < SPEC_DTYPES.length; i++) {
            int bits = (int) SPEC_DTYPES[i][1];
            long[] shape = {2, 4};
            tensors.add(new RawSafetensors.Tensor("t" + i, (String) SPEC_DTYPES[i][0], shape, pattern(bits, i)));
        }
        Path f = RawSafetensors.write(dir.resolve("all.safetensors"), file(tensors));
        assertEquals(SPEC_DTYPES.length, DType.values().length, "DType has exactly the spec's dtypes");
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            long begin = 0;
            for (int i = 0; i < SPEC_DTYPES.length; i++) {
                TensorEntry e = sf.get("t" + i);
                assertEquals(SPEC_DTYPES[i][0], e.dtype().safetensorsName());
                assertEquals((int) SPEC_DTYPES[i][1], e.dtype().bits());
                assertArrayEquals(new long[] {2, 4}, e.shape());
                assertEquals(8, e.numel());
                assertEquals(begin, e.begin());
                assertEquals(begin + (int) SPEC_DTYPES[i][1], e.end());
                assertArrayEquals(pattern((int) SPEC_DTYPES[i][1], i), sf.data(e).toArray(ValueLayout.JAVA_BYTE));
                begin = e.end();
            }
        }
    }

    @Test
    void scalarsEmptyTensorsAndDataOrderDifferentFromHeaderOrder() {
        // header order: big, scalar, empty, empty2d, last; data order: scalar, last, empty, big, empty2d
        String h = header(
                entry("big", "F16", "[3]", 12, 18),
                entry("scalar", "F32", "[]", 0, 4),
                entry("empty", "BF16", "[0]", 12, 12),
                entry("empty2d", "F32", "[4,0]", 18, 18),
                entry("last", "I64", "[1]", 4, 12));
        byte[] data = pattern(18, 3);
        Path f = RawSafetensors.write(dir.resolve("mixed.safetensors"), file(h, data));
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertEquals(List.of("big", "scalar", "empty", "empty2d", "last"), List.copyOf(sf.tensors().keySet()));
            TensorEntry scalar = sf.get("scalar");
            assertEquals(0, scalar.rank());
            assertEquals(1, scalar.numel());
            assertEquals(4, scalar.byteSize());
            assertEquals(0, sf.get("empty").numel());
            assertEquals(0, sf.data(sf.get("empty2d")).byteSize());
            assertArrayEquals(java.util.Arrays.copyOfRange(data, 12, 18), sf.data(sf.get("big")).toArray(ValueLayout.JAVA_BYTE));
            assertArrayEquals(java.util.Arrays.copyOfRange(data, 4, 12), sf.data(sf.get("last")).toArray(ValueLayout.JAVA_BYTE));
            assertEquals(8 + h.length(), sf.dataStart());
            assertEquals(Map.of("format", "pt"), sf.metadata());
        }
    }

    @Test
    void headerPaddingMetadataVariantsAndUnknownFields() throws IOException {
        String h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3],\"extra\":{\"x\":[1,{}]}},"
                + "\"__metadata__\":null}";
        String padded = h + " ".repeat(64 - (8 + h.length()) % 64);
        assertEquals(0, (8 + padded.length()) % 64);
        Path f = RawSafetensors.write(dir.resolve("padded.safetensors"), file(padded, new byte[] {1, 2, 3}));
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertEquals(Map.of(), sf.metadata());
            assertEquals(8 + padded.length(), sf.dataStart());
            assertArrayEquals(new byte[] {1, 2, 3}, sf.data(sf.get("a")).toArray(ValueLayout.JAVA_BYTE));
            assertEquals(Files.size(f), sf.fileSize());
        }
        Path noMeta = RawSafetensors.write(dir.resolve("nometa.safetensors"),
                file("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}\n\t\r ", new byte[] {9}));
        try (SafetensorsFile sf = SafetensorsFile.open(noMeta)) {
            assertEquals(Map.of(), sf.metadata());
        }
        Path meta = RawSafetensors.write(dir.resolve("meta.safetensors"),
                file("{\"__metadata__\":{\"format\":\"pt\",\"z\":\"\u00e9\",\"a\":\"\"}}", new byte[0]));
        try (SafetensorsFile sf = SafetensorsFile.open(meta)) {
            assertEquals(List.of("format", "z", "a"), List.copyOf(sf.metadata().keySet()));
            assertEquals("\u00e9", sf.metadata().get("z"));
            assertTrue(sf.tensors().isEmpty());
        }
    }

    @Test
    void namesAreFullUnicodeAndEscapesDecode() {
        String name = "model.layers.0.\u00e9\u4e2d\uD83D\uDE00 \"q\"\\";
        Path f = RawSafetensors.write(dir.resolve("names.safetensors"),
                file(List.of(new RawSafetensors.Tensor(name, "U8", new long[] {1}, new byte[] {7}))));
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertEquals(List.of(name), List.copyOf(sf.tensors().keySet()));
        }
    }

    @Test
    void slicesAreZeroCopyAndReadOnly() throws IOException {
        Path f = RawSafetensors.write(dir.resolve("z.safetensors"),
                file(List.of(new RawSafetensors.Tensor("a", "F32", new long[] {2}, RawSafetensors.f32(1.5f, -2f)))));
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            MemorySegment s = sf.data(sf.get("a"));
            assertTrue(s.isReadOnly());
            assertTrue(s.isMapped());
            assertEquals(8, s.byteSize());
            // the file changed on disk shows through the mapping: the slice is a view, not a copy
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.write(ByteBuffer.wrap(RawSafetensors.f32(3.25f)), sf.dataStart());
            }
            assertEquals(3.25f, s.get(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0));
        }
    }

    /** Offsets past 4 GiB: a sparse file with a 5 GB tensor, then a small one whose bytes are read back. */
    @Test
    void offsetsBeyondFourGigabytes() throws IOException {
        long big = 5_000_000_000L;
        String h = header(entry("huge", "U8", "[" + big + "]", 0, big), entry("tail", "F32", "[1]", big, big + 4));
        byte[] head = file(h, new byte[0]);
        Path f = dir.resolve("sparse.safetensors");
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
                StandardOpenOption.SPARSE)) {
            ch.write(ByteBuffer.wrap(head));
            ch.write(ByteBuffer.wrap(RawSafetensors.f32(42.5f)), head.length + big);
        }
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            TensorEntry tail = sf.get("tail");
            assertEquals(big, tail.begin());
            assertEquals(big, sf.get("huge").byteSize());
            assertEquals(head.length + big + 4, sf.fileSize());
            assertEquals(42.5f, sf.data(tail).get(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0));
            MemorySegment huge = sf.data(sf.get("huge"));
            assertEquals(0, huge.get(ValueLayout.JAVA_BYTE, big - 1));
        }
    }

    @Test
    void refCopiesCheckBoundsAndAFileTruncatedAfterOpening() throws IOException {
        Path f = RawSafetensors.write(dir.resolve("r.safetensors"), file(List.of(
                new RawSafetensors.Tensor("h", "F16", new long[] {2}, RawSafetensors.u16(0x3C00, 0xC000)),
                new RawSafetensors.Tensor("f", "F32", new long[] {3}, RawSafetensors.f32(1, 2, 3)))));
        try (TensorStore store = TensorStore.openFile(f)) {
            TensorStore.Ref h = store.get("h");
            short[] s = new short[2];
            h.copyShorts(0, s, 0, 2);
            assertArrayEquals(new short[] {0x3C00, (short) 0xC000}, s);
            assertThrows(IndexOutOfBoundsException.class, () -> h.copyShorts(2, s, 0, 2));
            assertThrows(IndexOutOfBoundsException.class, () -> h.copyBytes(-1, new byte[1], 0, 1));
            TensorStore.Ref fl = store.get("f");
            float[] out = new float[3];
            fl.copyFloats(4, out, 1, 2);
            assertArrayEquals(new float[] {0, 2, 3}, out);

            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.truncate(Files.size(f) - 4);
            }
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> fl.copyFloats(0, out, 0, 3));
            assertEquals(f + ": tensor 'f': file was truncated after it was opened (" + (Files.size(f)) + " bytes now, "
                    + (Files.size(f) + 4) + " before)", e.getMessage());
        }
    }

    @Test
    void aFileReplacedOrDeletedAfterOpeningIsStillReadFromTheMapping() throws IOException {
        byte[] original = file(List.of(new RawSafetensors.Tensor("f", "F32", new long[] {2}, RawSafetensors.f32(1, 2))));
        Path f = RawSafetensors.write(dir.resolve("swap.safetensors"), original);
        try (TensorStore store = TensorStore.openFile(f)) {
            Path replacement = RawSafetensors.write(dir.resolve("new.tmp"), new byte[] {1, 2, 3});
            Files.move(replacement, f, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            float[] out = new float[2];
            store.get("f").copyFloats(0, out, 0, 2);
            assertArrayEquals(new float[] {1, 2}, out, "the mapped file, not its replacement");
            Files.delete(f);
            store.get("f").copyFloats(0, out, 0, 2);
            assertArrayEquals(new float[] {1, 2}, out);
        }
    }

    @Test
    void thePathNamesTheMappedFileUntilItIsReplacedOrRemoved() throws IOException {
        byte[] original = file(List.of(new RawSafetensors.Tensor("f", "F32", new long[] {2}, RawSafetensors.f32(1, 2))));
        Path f = RawSafetensors.write(dir.resolve("same.safetensors"), original);
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertTrue(sf.pathNamesMappedFile());
            Files.setLastModifiedTime(f, java.nio.file.attribute.FileTime.fromMillis(0));
            assertTrue(sf.pathNamesMappedFile(), "the same file, touched");
            // the same bytes under the same name, but another file
            Path replacement = Files.write(dir.resolve("same.tmp"), original);
            Files.move(replacement, f, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            assertFalse(sf.pathNamesMappedFile(), "replaced");
            Files.delete(f);
            assertFalse(sf.pathNamesMappedFile(), "removed");
        }
    }

    @Test
    void aClosedStoreFailsWithAMessageNotACrash() {
        Path f = RawSafetensors.write(dir.resolve("c.safetensors"),
                file(List.of(new RawSafetensors.Tensor("f", "F32", new long[] {1}, RawSafetensors.f32(1)))));
        TensorStore store = TensorStore.openFile(f);
        TensorStore.Ref r = store.get("f");
        store.close();
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> r.copyFloats(0, new float[1], 0, 1));
        assertEquals(f + ": tensor 'f': checkpoint is closed", e.getMessage());
    }

    @Test
    void openingInACallersArenaLeavesTheArenaToTheCaller() {
        Path f = RawSafetensors.write(dir.resolve("a.safetensors"),
                file(List.of(new RawSafetensors.Tensor("f", "U8", new long[] {1}, new byte[] {5}))));
        try (Arena arena = Arena.ofShared()) {
            MemorySegment s;
            try (SafetensorsFile sf = SafetensorsFile.open(f, arena)) {
                s = sf.data(sf.get("f"));
            }
            assertEquals(5, s.get(ValueLayout.JAVA_BYTE, 0), "the mapping lives as long as the caller's arena");
        }
    }

    @Test
    void headerOfManyTensorsIsReadInOrder() {
        List<RawSafetensors.Tensor> tensors = new ArrayList<>();
        for (int i = 0; i < 5000; i++) {
            tensors.add(new RawSafetensors.Tensor("model.layers." + i + ".weight", "BF16", new long[] {i % 3, 1},
                    new byte[(i % 3) * 2]));
        }
        Path f = RawSafetensors.write(dir.resolve("many.safetensors"), file(tensors));
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertEquals(5000, sf.tensors().size());
            int i = 0;
            for (String name : sf.tensors().keySet()) {
                assertEquals("model.layers." + i++ + ".weight", name);
            }
        }
    }

    @Test
    void headerIsDecodedAsUtf8() {
        byte[] raw = file(header(entry("\u00e9", "U8", "[1]", 0, 1)), new byte[] {1});
        String text = new String(raw, 8, raw.length - 9, StandardCharsets.UTF_8);
        assertTrue(text.contains("\"\u00e9\""));
        Path f = RawSafetensors.write(dir.resolve("u.safetensors"), raw);
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertTrue(sf.tensors().containsKey("\u00e9"));
        }
    }
}

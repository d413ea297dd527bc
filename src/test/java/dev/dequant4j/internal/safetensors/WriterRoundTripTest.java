package dev.dequant4j.internal.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class WriterRoundTripTest {
    @TempDir
    Path dir;

    private static SafetensorsWriter.TensorData tensor(String name, DType dtype, long[] shape, int seed) {
        ShardedLayout.Spec spec = new ShardedLayout.Spec(name, dtype, shape);
        byte[] b = new byte[(int) spec.byteSize()];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) (i * 13 + seed * 101 + 7);
        }
        return new SafetensorsWriter.TensorData(spec, MemorySegment.ofArray(b));
    }

    /** One tensor of every dtype (whole bytes for the sub-byte ones), plus scalars and empty tensors. */
    private static List<SafetensorsWriter.TensorData> everyKind() {
        List<SafetensorsWriter.TensorData> l = new ArrayList<>();
        int seed = 0;
        for (DType d : DType.values()) {
            long[] shape = switch (d) {
                case F4 -> new long[] {3, 2};
                case F6_E2M3, F6_E3M2 -> new long[] {2, 2, 3};
                default -> new long[] {2, 3};
            };
            l.add(tensor("t." + d.name().toLowerCase(java.util.Locale.ROOT), d, shape, seed++));
        }
        l.add(tensor("scalar.f32", DType.F32, new long[0], seed++));
        l.add(tensor("scalar.i64", DType.I64, new long[0], seed++));
        l.add(tensor("empty.bf16", DType.BF16, new long[] {0}, seed++));
        l.add(tensor("empty.f16.2d", DType.F16, new long[] {3, 0}, seed++));
        l.add(tensor("one.f4", DType.F4, new long[] {2}, seed++));
        return l;
    }

    private static byte[] bytes(MemorySegment s) {
        return s.toArray(ValueLayout.JAVA_BYTE);
    }

    /** Header checks done on the raw bytes: length prefix, format metadata first, space padding, alignment. */
    private static void checkHeaderBytes(Path file) throws IOException {
        byte[] all = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + n) % 64, "data section starts on a 64-byte boundary");
        String header = new String(all, 8, (int) n, StandardCharsets.UTF_8);
        assertTrue(header.startsWith("{\"__metadata__\":{\"format\":\"pt\"}"), header);
        String json = header.stripTrailing();
        assertTrue(json.endsWith("}"));
        for (int i = json.length(); i < header.length(); i++) {
            assertEquals(' ', header.charAt(i), "padding is spaces");
        }
        assertTrue(header.length() - json.length() < 64);
    }

    @Test
    void singleFileRoundTripOfEveryDtypeScalarAndEmpty() throws IOException {
        List<SafetensorsWriter.TensorData> in = everyKind();
        Path out = dir.resolve("out");
        ShardedLayout layout = SafetensorsWriter.write(out, in, Long.MAX_VALUE, false);
        assertEquals(1, layout.shards().size());
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(List.of("model.safetensors"), s.map(p -> p.getFileName().toString()).toList());
        }
        Path f = out.resolve("model.safetensors");
        checkHeaderBytes(f);
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            assertEquals(in.stream().map(t -> t.spec().name()).toList(), List.copyOf(sf.tensors().keySet()),
                    "header keeps the given order");
            long expectedBegin = 0;
            for (SafetensorsWriter.TensorData t : in) {
                TensorEntry e = sf.get(t.spec().name());
                assertEquals(t.spec().dtype(), e.dtype());
                assertArrayEquals(t.spec().shape(), e.shape());
                assertEquals(expectedBegin, e.begin(), "data in the given order, no gaps");
                assertArrayEquals(bytes(t.bytes()), bytes(sf.data(e)), e.name());
                expectedBegin = e.end();
            }
            assertEquals(Map.of("format", "pt"), sf.metadata());
            assertEquals(Files.size(f), layout.totalFileBytes());
        }
    }

    /** huggingface_hub's split_state_dict_into_shards_factory, restated here as the oracle. */
    private static List<List<String>> hubShards(List<SafetensorsWriter.TensorData> tensors, long max) {
        List<List<String>> shards = new ArrayList<>();
        List<String> current = new ArrayList<>();
        long size = 0;
        for (SafetensorsWriter.TensorData t : tensors) {
            long s = t.spec().byteSize();
            if (s > max) {
                shards.add(List.of(t.spec().name()));
                continue;
            }
            if (size + s > max) {
                shards.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(t.spec().name());
            size += s;
        }
        if (!current.isEmpty()) {
            shards.add(current);
        }
        return shards;
    }

    @Test
    void shardedRoundTripWithIndexAsTransformersWritesIt() throws IOException {
        List<SafetensorsWriter.TensorData> in = new ArrayList<>(everyKind());
        in.add(1, tensor("big.bf16", DType.BF16, new long[] {40}, 99));   // 80 bytes > max: a shard of its own
        long max = 60;
        Path out = dir.resolve("sharded");
        ShardedLayout layout = SafetensorsWriter.write(out, in, max, false);

        List<List<String>> expected = hubShards(in, max);
        int n = expected.size();
        assertTrue(n > 3, "several shards: " + n);
        assertEquals(List.of("big.bf16"), expected.getFirst());
        Map<String, String> weightMap = new TreeMap<>();
        List<String> files = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String name = String.format("model-%05d-of-%05d.safetensors", i + 1, n);
            files.add(name);
            for (String t : expected.get(i)) {
                weightMap.put(t, name);
            }
            checkHeaderBytes(out.resolve(name));
            try (SafetensorsFile sf = SafetensorsFile.open(out.resolve(name))) {
                assertEquals(expected.get(i), List.copyOf(sf.tensors().keySet()), name);
            }
        }
        List<String> listed;
        try (Stream<Path> s = Files.list(out)) {
            listed = s.map(p -> p.getFileName().toString()).sorted().toList();
        }
        List<String> all = new ArrayList<>(files);
        all.add("model.safetensors.index.json");
        assertEquals(all.stream().sorted().toList(), listed);

        long totalSize = 0;
        long totalParams = 0;
        for (SafetensorsWriter.TensorData t : in) {
            totalSize += t.spec().byteSize();
            totalParams += t.spec().numel();
        }
        // json.dumps(index, indent=2, sort_keys=True) + "\n", spelled out by hand
        StringBuilder idx = new StringBuilder("{\n  \"metadata\": {\n");
        idx.append("    \"total_parameters\": ").append(totalParams).append(",\n");
        idx.append("    \"total_size\": ").append(totalSize).append("\n  },\n  \"weight_map\": {\n");
        int k = 0;
        for (Map.Entry<String, String> e : weightMap.entrySet()) {
            idx.append("    \"").append(e.getKey()).append("\": \"").append(e.getValue()).append('"');
            idx.append(++k < weightMap.size() ? ",\n" : "\n");
        }
        idx.append("  }\n}\n");
        assertEquals(idx.toString(), Files.readString(out.resolve("model.safetensors.index.json")));

        try (TensorStore store = TensorStore.openSharded(out.resolve(ShardIndex.FILE_NAME))) {
            assertEquals(in.size(), store.refs().size());
            for (SafetensorsWriter.TensorData t : in) {
                TensorStore.Ref r = store.get(t.spec().name());
                assertEquals(weightMap.get(t.spec().name()), r.path().getFileName().toString());
                assertArrayEquals(bytes(t.bytes()), r.bytes(), t.spec().name());
            }
        }
        assertEquals(totalSize, layout.totalSize());
    }

    /** Our writer reproduces, byte for byte, the index file that Python wrote for the sharded fixture. */
    @Test
    void indexFormatMatchesTheFixtureWrittenByPython() throws IOException {
        Path index = Fixtures.checkpoint("llama-h64-mixed").resolve(ShardIndex.FILE_NAME);
        byte[] python = Files.readAllBytes(index);
        String ours = Json.write(Json.parse(python), Json.Style.PYTHON_INDENT2_SORTED) + "\n";
        assertEquals(new String(python, StandardCharsets.UTF_8), ours);
    }

    @Test
    void namesNeedingEscapesSurviveAndSortByCodePointInTheIndex() throws IOException {
        List<SafetensorsWriter.TensorData> in = List.of(
                tensor("z\u00e9\"q\\", DType.U8, new long[] {4}, 1),
                tensor("\uD83D\uDE00", DType.U8, new long[] {4}, 2),
                tensor("\uFF5E", DType.U8, new long[] {4}, 3),
                tensor("a\nb", DType.U8, new long[] {4}, 4));
        Path out = dir.resolve("esc");
        SafetensorsWriter.write(out, in, 4, false);
        String index = Files.readString(out.resolve(ShardIndex.FILE_NAME));
        String expected = """
                {
                  "metadata": {
                    "total_parameters": 16,
                    "total_size": 16
                  },
                  "weight_map": {
                    "a\\nb": "model-00004-of-00004.safetensors",
                    "z\\u00e9\\"q\\\\": "model-00001-of-00004.safetensors",
                    "\\uff5e": "model-00003-of-00004.safetensors",
                    "\\ud83d\\ude00": "model-00002-of-00004.safetensors"
                  }
                }
                """;
        assertEquals(expected, index);
        try (TensorStore store = TensorStore.openSharded(out.resolve(ShardIndex.FILE_NAME))) {
            for (SafetensorsWriter.TensorData t : in) {
                assertArrayEquals(bytes(t.bytes()), store.get(t.spec().name()).bytes());
            }
        }
    }

    @Test
    void anExistingTargetIsRefusedUnlessOverwriting() throws IOException {
        Path out = Files.createDirectory(dir.resolve("exists"));
        Files.writeString(out.resolve("old.txt"), "old");
        List<SafetensorsWriter.TensorData> in = List.of(tensor("a", DType.F32, new long[] {2}, 1));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> SafetensorsWriter.write(out, in, 100, false));
        assertEquals(out + ": output already exists (use Export.overwrite(true) to replace it)", e.getMessage());
        assertTrue(Files.exists(out.resolve("old.txt")));

        SafetensorsWriter.write(out, in, 100, true);
        try (Stream<Path> s = Files.list(out)) {
            assertEquals(List.of("model.safetensors"), s.map(p -> p.getFileName().toString()).toList());
        }
        assertEquals(List.of("exists"), siblings());

        Path file = Files.writeString(dir.resolve("plain-file"), "x");
        e = assertThrows(Dequant4jException.class, () -> SafetensorsWriter.write(file, in, 100, true));
        assertEquals(file + ": output exists and is not a directory; refusing to replace it", e.getMessage());
        assertEquals("x", Files.readString(file));
    }

    private List<String> siblings() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void aFailureMidWayLeavesNeitherTargetNorTemporaryDirectory() throws IOException {
        Arena arena = Arena.ofShared();
        MemorySegment gone = arena.allocate(8);
        arena.close();
        List<SafetensorsWriter.TensorData> in = List.of(
                tensor("a", DType.F32, new long[] {2}, 1),
                new SafetensorsWriter.TensorData(new ShardedLayout.Spec("b", DType.F32, new long[] {2}), gone),
                tensor("c", DType.F32, new long[] {2}, 3));
        Path out = dir.resolve("fails");
        assertThrows(IllegalStateException.class, () -> SafetensorsWriter.write(out, in, 8, false));
        assertFalse(Files.exists(out));
        assertEquals(List.of(), siblings(), "no temporary directory left");
    }

    @Test
    void staleTemporaryDirectoriesOfDeadProcessesAreRemoved() throws IOException {
        Path stale = Files.createDirectory(dir.resolve(".out.dequant4j-tmp-2147483646-1f"));
        Files.writeString(stale.resolve("model.safetensors"), "partial");
        Path other = Files.createDirectory(dir.resolve(".other.dequant4j-tmp-2147483646-1f"));
        SafetensorsWriter.write(dir.resolve("out"), List.of(tensor("a", DType.U8, new long[] {1}, 1)), 100, false);
        assertFalse(Files.exists(stale));
        assertTrue(Files.exists(other), "only the target's own leftovers are touched");
    }

    @Test
    void invalidInputIsRefusedBeforeAnythingIsWritten() throws IOException {
        List<SafetensorsWriter.TensorData> dup = List.of(tensor("a", DType.U8, new long[] {1}, 1),
                tensor("a", DType.U8, new long[] {1}, 2));
        assertEquals("duplicate tensor name a", assertThrows(IllegalArgumentException.class,
                () -> SafetensorsWriter.write(dir.resolve("d"), dup, 100, false)).getMessage());
        assertEquals("a: 3 bytes given, 4 needed", assertThrows(IllegalArgumentException.class,
                () -> new SafetensorsWriter.TensorData(new ShardedLayout.Spec("a", DType.F32, new long[] {1}),
                        MemorySegment.ofArray(new byte[3]))).getMessage());
        assertEquals("tensor f4 has no valid byte size", assertThrows(IllegalArgumentException.class,
                () -> ShardedLayout.plan(List.of(new ShardedLayout.Spec("f4", DType.F4, new long[] {3})), 100, 64))
                .getMessage());
        assertEquals(List.of(), siblings());
    }

    @Test
    void layoutIsComputedFromSpecsAlone() {
        Map<String, long[]> shapes = new LinkedHashMap<>();
        shapes.put("x", new long[] {1000, 1000, 1000});
        shapes.put("y", new long[] {3});
        List<ShardedLayout.Spec> specs = new ArrayList<>();
        shapes.forEach((k, v) -> specs.add(new ShardedLayout.Spec(k, DType.F32, v)));
        ShardedLayout l = ShardedLayout.plan(specs, Long.MAX_VALUE, 64);
        ShardedLayout.Shard s = l.shards().getFirst();
        assertEquals(0, s.dataStart() % 64);
        assertEquals(s.dataStart() + 4_000_000_000L + 12, s.fileSize());
        assertEquals(s.dataStart() + 4_000_000_000L, l.placement("y").fileOffset());
        assertEquals(4_000_000_012L, l.totalSize());
    }
}

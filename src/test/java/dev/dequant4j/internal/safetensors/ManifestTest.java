package dev.dequant4j.internal.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Fixtures;
import dev.dequant4j.StoredTensor;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every safetensors file of the reference fixtures, read with our reader and checked against manifest.json: tensor
 * names, dtypes, shapes, file of each tensor and file sizes. The manifest has no offsets, so they are derived
 * independently: the safetensors library (which wrote every fixture) lays the data out sorted by dtype, descending in
 * its enum order, then by name, with no gaps.
 */
class ManifestTest {
    /** The safetensors library's Dtype enum order, and the element sizes, as a table of its own. */
    private static final List<String> RUST_DTYPE_ORDER = List.of("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8",
            "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32",
            "F32", "C64", "F64", "I64", "U64");
    private static final Map<String, String> TORCH_TO_ST = Map.of("bfloat16", "BF16", "float16", "F16", "float32", "F32",
            "uint8", "U8", "int8", "I8");
    private static final Map<String, Integer> BYTES = Map.of("BF16", 2, "F16", 2, "F32", 4, "U8", 1, "I8", 1);

    static JsonObject manifest;

    @BeforeAll
    static void readManifest() throws IOException {
        manifest = Json.readObject(Fixtures.root().resolve("manifest.json"), Json.MAX_FILE_BYTES);
    }

    /** An expected tensor: safetensors dtype name, shape (null: one dimension of unknown length), and its file. */
    record Want(String dtype, long[] shape, String file) {
        long bytes(TensorEntry actual) {
            if (shape == null) {
                assertEquals(1, actual.rank(), actual.name());
                return actual.dim(0) * BYTES.get(dtype);
            }
            long n = BYTES.get(dtype);
            for (long d : shape) {
                n *= d;
            }
            return n;
        }
    }

    private static long[] shape(JsonValue v) {
        JsonArray a = (JsonArray) v;
        long[] s = new long[a.size()];
        for (int i = 0; i < s.length; i++) {
            s[i] = (Long) a.get(i).toJava();
        }
        return s;
    }

    /** Reads the files of a directory and checks them, by file, against {@code want}. */
    private static void check(Path dir, Map<String, Want> want, JsonObject files) throws IOException {
        Map<String, List<String>> byFile = new LinkedHashMap<>();
        want.forEach((name, w) -> byFile.computeIfAbsent(w.file(), k -> new ArrayList<>()).add(name));
        for (Map.Entry<String, List<String>> f : byFile.entrySet()) {
            Path path = dir.resolve(f.getKey());
            assertEquals(files.getLong(f.getKey()), Files.size(path), f.getKey() + " size");
            long headerLength;
            try (FileChannel ch = FileChannel.open(path)) {
                ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                ch.read(b, 0);
                headerLength = b.flip().getLong();
            }
            try (SafetensorsFile sf = SafetensorsFile.open(path)) {
                assertEquals(new TreeSet<>(f.getValue()), new TreeSet<>(sf.tensors().keySet()), path.toString());
                assertEquals(8 + headerLength, sf.dataStart());
                assertEquals("pt", sf.metadata().get("format"));
                List<String> order = new ArrayList<>(f.getValue());
                order.sort(Comparator.comparing((String n) -> -RUST_DTYPE_ORDER.indexOf(want.get(n).dtype()))
                        .thenComparing(Comparator.naturalOrder()));
                long begin = 0;
                for (String name : order) {
                    Want w = want.get(name);
                    TensorEntry e = sf.get(name);
                    assertEquals(w.dtype(), e.dtype().safetensorsName(), name);
                    if (w.shape() != null) {
                        assertArrayEquals(w.shape(), e.shape(), name);
                    }
                    long bytes = w.bytes(e);
                    assertEquals(begin, e.begin(), name + " begin");
                    assertEquals(begin + bytes, e.end(), name + " end");
                    assertEquals(bytes, sf.data(e).byteSize());
                    begin += bytes;
                }
                assertEquals(Files.size(path), sf.dataStart() + begin, "the data ends the file");
            }
        }
    }

    static List<String> checkpoints() {
        return List.copyOf(manifest.getObject("checkpoints").keys());
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void checkpointFiles(String name) throws IOException {
        JsonObject c = manifest.getObject("checkpoints").getObject(name);
        Map<String, Want> want = new LinkedHashMap<>();
        JsonObject keys = c.getObject("state_dict_keys");
        // The manifest lists every key only for the sharded checkpoint; for the others it lists layer 0, and every
        // layer has the same keys with the same shapes (the layers' linear shapes are equal).
        boolean layer0Only = keys.keys().stream().noneMatch(k -> k.startsWith("model.layers.1."));
        long layers = layer0Only ? manifest.getObject("models").getObject(c.getString("model")).getLong("layers") : 1;
        keys.members().forEach((k, v) -> {
            JsonObject o = (JsonObject) v;
            for (long layer = 0; layer < layers; layer++) {
                // a quant_state blob's length depends on the text of its nested_offset: unknown for other layers
                boolean unknownLength = layer > 0 && k.contains(".quant_state.");
                want.put(k.replace("model.layers.0.", "model.layers." + layer + "."),
                        new Want(TORCH_TO_ST.get(o.getString("dtype")), unknownLength ? null : shape(o.get("shape")),
                                o.optString("file").orElse("model.safetensors")));
            }
        });
        assertEquals(c.getObject("tensors").keys().stream().filter(t -> !want.containsKey(t)).toList(), List.of(),
                "every quantized linear has its stored weight");
        Path dir = Fixtures.checkpoint(name);
        check(dir, want, c.getObject("files"));
        assertEquals(c.getObject("files").keys(), listing(dir), "no other files in the checkpoint directory");

        // the public API lists the same stored tensors, with absolute file offsets
        try (Checkpoint ck = Checkpoint.open(dir)) {
            assertEquals(want.keySet(), stored(ck).keySet());
            for (StoredTensor s : ck.storedTensors()) {
                Want w = want.get(s.name());
                assertEquals(w.file(), s.file().getFileName().toString());
                assertEquals(w.dtype(), s.dtype().safetensorsName());
                if (w.shape() != null) {
                    assertArrayEquals(w.shape(), s.shape());
                    assertEquals(w.bytes(null), s.byteSize());
                }
                try (FileChannel ch = FileChannel.open(s.file())) {
                    ByteBuffer b = ByteBuffer.allocate((int) s.byteSize());
                    ch.read(b, s.fileOffset());
                    assertArrayEquals(b.array(), ck.readBytes(s.name()), s.name() + " raw bytes at fileOffset");
                }
            }
        }
    }

    private static Map<String, StoredTensor> stored(Checkpoint c) {
        Map<String, StoredTensor> m = new HashMap<>();
        c.storedTensors().forEach(s -> m.put(s.name(), s));
        return m;
    }

    private static Set<String> listing(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return new TreeSet<>(s.map(p -> p.getFileName().toString()).toList());
        }
    }

    @Test
    void quantStateBlobsAreTheJsonTheManifestShows() {
        for (String name : checkpoints()) {
            JsonObject c = manifest.getObject("checkpoints").getObject(name);
            if (!c.has("example_packed_quant_state_json")) {
                continue;
            }
            String example = c.getString("example_packed_quant_state_json");
            boolean found = false;
            try (Checkpoint ck = Checkpoint.open(Fixtures.checkpoint(name))) {
                for (StoredTensor s : ck.storedTensors()) {
                    if (s.name().contains(".quant_state.bitsandbytes__")) {
                        String blob = new String(ck.readBytes(s.name()), StandardCharsets.UTF_8);
                        JsonObject qs = Json.parseObject(blob.getBytes(StandardCharsets.UTF_8));
                        String weight = s.name().substring(0, s.name().indexOf(".quant_state."));
                        assertArrayEquals(shape(c.getObject("tensors").getObject(weight).get("shape")),
                                shape(qs.get("shape")), s.name());
                        found |= blob.equals(example);
                    }
                }
            }
            assertTrue(found, name + ": some quant_state blob is byte-identical to the manifest's example");
        }
    }

    static List<String> adapters() {
        return List.copyOf(manifest.getObject("adapters").keys());
    }

    @ParameterizedTest
    @MethodSource("adapters")
    void adapterFiles(String name) throws IOException {
        JsonObject a = manifest.getObject("adapters").getObject(name);
        JsonObject linear = manifest.getObject("models").getObject(a.getString("model")).getObject("linear_shapes");
        String dtype = TORCH_TO_ST.get(a.getString("dtype"));
        boolean dora = a.getBoolean("use_dora", false);
        Map<String, Want> want = new LinkedHashMap<>();
        a.getObject("per_module").members().forEach((module, v) -> {
            long r = ((JsonObject) v).getLong("r");
            long[] outIn = shape(linear.get(module.substring(module.lastIndexOf('.') + 1)));
            String key = "base_model.model." + module;
            want.put(key + ".lora_A.weight", new Want(dtype, new long[] {r, outIn[1]}, "adapter_model.safetensors"));
            want.put(key + ".lora_B.weight", new Want(dtype, new long[] {outIn[0], r}, "adapter_model.safetensors"));
            if (dora) {
                want.put(key + ".lora_magnitude_vector", new Want(dtype, new long[] {outIn[0]}, "adapter_model.safetensors"));
            }
        });
        Path dir = Fixtures.adapter(name);
        check(dir, want, a.getObject("files"));
        assertEquals(a.getObject("files").keys(), listing(dir));
        JsonObject config = Json.readObject(dir.resolve("adapter_config.json"), Json.MAX_FILE_BYTES);
        assertEquals(dora, config.getBoolean("use_dora", false));
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void expectedDequantFiles(String name) throws IOException {
        JsonObject c = manifest.getObject("checkpoints").getObject(name);
        Map<String, Want> want = new LinkedHashMap<>();
        c.getObject("tensors").members().forEach((k, v) ->
                want.put(k, new Want("F32", shape(((JsonObject) v).get("shape")), "expected_dequant.safetensors")));
        Path dir = Fixtures.root().resolve("expected/checkpoints").resolve(name);
        long size = Files.size(dir.resolve("expected_dequant.safetensors"));
        JsonObject files = new JsonObject(Map.of("expected_dequant.safetensors",
                dev.dequant4j.internal.json.JsonNumber.of(size)));
        check(dir, want, files);
    }

    static List<String> pairs() {
        return List.copyOf(manifest.getObject("pairs").keys());
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void expectedMergedFiles(String pair) throws IOException {
        JsonObject p = manifest.getObject("pairs").getObject(pair);
        JsonObject tensors = manifest.getObject("checkpoints").getObject(p.getString("checkpoint")).getObject("tensors");
        Map<String, long[]> linears = new LinkedHashMap<>();
        tensors.members().forEach((k, v) -> linears.put(k, shape(((JsonObject) v).get("shape"))));
        if (p.has("unquantized_base_modules")) {
            JsonObject linearShapes = manifest.getObject("models")
                    .getObject(manifest.getObject("checkpoints").getObject(p.getString("checkpoint")).getString("model"))
                    .getObject("linear_shapes");
            for (JsonValue m : p.getArray("unquantized_base_modules").values()) {
                String weight = ((JsonString) m).value();
                String module = weight.substring(0, weight.length() - ".weight".length());
                linears.put(weight, shape(linearShapes.get(module.substring(module.lastIndexOf('.') + 1))));
            }
        }
        Path dir = Fixtures.root().resolve("expected/merged").resolve(pair);
        JsonObject files = p.getObject("files");
        for (String file : files.keys()) {
            String dtype = file.contains("_f16") ? "F16" : "F32";
            Map<String, Want> want = new LinkedHashMap<>();
            linears.forEach((k, s) -> want.put(k, new Want(dtype, s, file)));
            check(dir, want, files);
        }
        assertEquals(files.keys(), listing(dir));
    }

    @Test
    void originalModelFiles() throws IOException {
        JsonObject models = manifest.getObject("models");
        for (String model : models.keys()) {
            JsonObject m = models.getObject(model);
            long hidden = m.getLong("hidden");
            long vocab = m.getLong("vocab");
            String dtype = TORCH_TO_ST.get(m.getString("dtype").substring("torch.".length()));
            String file = "original.safetensors";
            Map<String, Want> want = new LinkedHashMap<>();
            want.put("model.embed_tokens.weight", new Want(dtype, new long[] {vocab, hidden}, file));
            want.put("model.norm.weight", new Want(dtype, new long[] {hidden}, file));
            want.put("lm_head.weight", new Want(dtype, new long[] {vocab, hidden}, file));
            for (long layer = 0; layer < m.getLong("layers"); layer++) {
                String prefix = "model.layers." + layer + ".";
                want.put(prefix + "input_layernorm.weight", new Want(dtype, new long[] {hidden}, file));
                want.put(prefix + "post_attention_layernorm.weight", new Want(dtype, new long[] {hidden}, file));
                m.getObject("linear_shapes").members().forEach((proj, s) -> {
                    String group = proj.endsWith("_proj") && (proj.startsWith("gate") || proj.startsWith("up")
                            || proj.startsWith("down")) ? "mlp." : "self_attn.";
                    want.put(prefix + group + proj + ".weight", new Want(dtype, shape(s), file));
                });
            }
            Path dir = Fixtures.root().resolve("expected/models").resolve(model);
            JsonObject files = new JsonObject(Map.of(file,
                    dev.dequant4j.internal.json.JsonNumber.of(Files.size(dir.resolve(file)))));
            check(dir, want, files);
        }
    }
}

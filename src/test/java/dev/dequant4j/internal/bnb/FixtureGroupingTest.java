package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.QuantKind;
import dev.dequant4j.StoredTensor;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The logical listing of every fixture checkpoint matches what manifest.json (written by the fixture generator from
 * bitsandbytes' own state dicts) says: which tensors are quantized and how, their logical shapes and dtypes, which
 * stored keys make them up, and that no component key is listed as a tensor of its own.
 */
class FixtureGroupingTest {
    private static final List<String> COMPONENT_SUFFIXES = List.of(".absmax", ".quant_map", ".nested_absmax",
            ".nested_quant_map", ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4");

    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    static JsonObject manifest() {
        try {
            return Json.readObject(Fixtures.root().resolve("manifest.json"), 1 << 24);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static JsonObject manifest(String checkpoint) {
        return manifest().getObject("checkpoints").getObject(checkpoint);
    }

    static DType torchDtype(String name) {
        return switch (name.replace("torch.", "")) {
            case "bfloat16" -> DType.BF16;
            case "float16" -> DType.F16;
            case "float32" -> DType.F32;
            case "uint8" -> DType.U8;
            case "int8" -> DType.I8;
            default -> throw new IllegalArgumentException("test setup: dtype " + name);
        };
    }

    static long[] shape(JsonValue v) {
        JsonArray a = (JsonArray) v;
        long[] s = new long[a.size()];
        for (int i = 0; i < s.length; i++) {
            s[i] = ((JsonNumber) a.get(i)).longValue();
        }
        return s;
    }

    /** The stored key that makes {@code key} part of a quantized weight, or null for a key that stands alone. */
    private static String owner(String key, Set<String> quantized) {
        for (String s : COMPONENT_SUFFIXES) {
            if (key.endsWith(s) && quantized.contains(key.substring(0, key.length() - s.length()))) {
                return key.substring(0, key.length() - s.length());
            }
        }
        for (String s : List.of(".SCB", ".weight_format")) {
            if (key.endsWith(s) && quantized.contains(key.substring(0, key.length() - s.length()) + ".weight")) {
                return key.substring(0, key.length() - s.length()) + ".weight";
            }
        }
        return quantized.contains(key) ? key : null;
    }

    /**
     * The manifest lists every quantized linear with its logical shape, and the stored keys (dtype, shape) of layer
     * 0 and the global tensors (of every layer for llama-h64-mixed); the unquantized original model has every
     * logical name.
     */
    @ParameterizedTest
    @MethodSource("checkpoints")
    void logicalListingMatchesTheManifest(String name) {
        JsonObject m = manifest(name);
        JsonObject quant = m.getObject("quantization");
        JsonObject quantizedTensors = m.getObject("tensors");
        JsonObject keys = m.getObject("state_dict_keys");
        DType modelDtype = torchDtype(manifest().getObject("models").getObject(m.getString("model"))
                .getString("dtype"));
        boolean fourBit = quant.getString("kind").equals("4bit");
        QuantKind kind = !fourBit ? QuantKind.INT8
                : quant.getString("quant_type").equals("nf4") ? QuantKind.NF4 : QuantKind.FP4;
        boolean tied = name.equals("llama-h64-mixed");

        Set<String> quantized = quantizedTensors.keys();
        Map<String, List<String>> components = new HashMap<>();
        for (String key : keys.keys()) {
            String owner = owner(key, quantized);
            if (owner != null) {
                components.computeIfAbsent(owner, k -> new ArrayList<>()).add(key);
            }
        }
        // what a quantized weight is made of, as the manifest shows it for one of them
        String sample = components.keySet().iterator().next();
        String sampleModule = sample.substring(0, sample.length() - ".weight".length());
        List<String> suffixes = components.get(sample).stream().map(k -> k.substring(sampleModule.length()))
                .toList();

        Set<String> expectedNames = new LinkedHashSet<>();
        try (Checkpoint o = Checkpoint.open(original(name))) {
            for (TensorInfo t : o.tensors()) {
                if (!(tied && t.name().equals("lm_head.weight"))) {
                    expectedNames.add(t.name());
                }
            }
        }

        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name))) {
            List<String> names = c.tensors().stream().map(TensorInfo::name).toList();
            assertEquals(expectedNames, Set.copyOf(names), "logical tensors of " + name);
            assertEquals(expectedNames.size(), names.size());
            Map<String, Long> storedBytes = new HashMap<>();
            for (StoredTensor s : c.storedTensors()) {
                storedBytes.put(s.name(), s.byteSize());
            }
            long storedKeys = 0;
            for (TensorInfo t : c.tensors()) {
                storedKeys += t.components().size();
                if (quantized.contains(t.name())) {
                    assertEquals(kind, t.kind(), t.name());
                    assertTrue(t.isQuantized());
                    assertArrayEquals(shape(quantizedTensors.getObject(t.name()).get("shape")), t.shape(), t.name());
                    assertEquals(fourBit ? quant.getLong("blocksize") : 0, t.blocksize(), t.name());
                    assertEquals(fourBit && quant.getBoolean("double_quant", false), t.doubleQuant(), t.name());
                    // 4-bit: the quant state's dtype (the model's); int8: bnb's dequant output, float32
                    assertEquals(fourBit ? modelDtype : DType.F32, t.dtype(), t.name());
                    assertEquals(fourBit ? DType.U8 : DType.I8, t.storedDtype(), t.name());
                    List<String> want = components.get(t.name());
                    if (want == null) {
                        String module = t.name().substring(0, t.name().length() - ".weight".length());
                        want = suffixes.stream().map(sfx -> module + sfx).toList();
                    }
                    assertEquals(Set.copyOf(want), Set.copyOf(t.components()), t.name());
                    assertEquals(t.name(), t.components().getFirst());
                    assertEquals(t.components().stream().mapToLong(storedBytes::get).sum(), t.storedBytes());
                } else {
                    assertEquals(QuantKind.PLAIN, t.kind(), t.name());
                    assertFalse(t.isQuantized());
                    assertEquals(t.dtype(), t.storedDtype(), t.name());
                    if (keys.has(t.name())) {
                        JsonObject k = keys.getObject(t.name());
                        assertEquals(torchDtype(k.getString("dtype")), t.dtype(), t.name());
                        assertArrayEquals(shape(k.get("shape")), t.shape(), t.name());
                    }
                    assertEquals(0, t.blocksize());
                    assertFalse(t.doubleQuant());
                    assertEquals(List.of(t.name()), t.components());
                }
            }
            // every stored key belongs to exactly one logical tensor
            assertEquals(c.storedTensors().size(), storedKeys);
            // component keys are stored tensors, not logical ones, and asking for one says whose part it is
            for (Map.Entry<String, List<String>> e : components.entrySet()) {
                for (String comp : e.getValue()) {
                    assertTrue(storedBytes.containsKey(comp), comp);
                    if (comp.equals(e.getKey())) {
                        continue;
                    }
                    assertTrue(c.find(comp).isEmpty(), comp + " listed as a logical tensor");
                    Dequant4jException ex = assertThrows(Dequant4jException.class, () -> c.tensor(comp));
                    assertEquals(c.path() + ": tensor '" + comp + "': no such tensor (it is a stored component of "
                            + "the quantized tensor '" + e.getKey() + "')", ex.getMessage());
                }
            }
        }
    }

    static Path original(String checkpoint) {
        return Fixtures.root().resolve("expected/models").resolve(manifest(checkpoint).getString("model"))
                .resolve("original.safetensors");
    }

    @Test
    void mixedCheckpointResolvesSplitComponentsKeepsSkippedLinearsPlainAndIsTied() {
        JsonObject m = manifest("llama-h64-mixed");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed"))) {
            assertEquals(2, c.files().size());
            // the components of layer 1's q_proj live in two shards and still make one NF4 tensor
            JsonObject split = m.getObject("split_components").getObject("model.layers.1.self_attn.q_proj");
            Map<String, Path> fileOf = new HashMap<>();
            for (StoredTensor s : c.storedTensors()) {
                fileOf.put(s.name(), s.file());
            }
            Set<String> shards = new LinkedHashSet<>();
            for (String key : split.keys()) {
                assertEquals(split.getString(key), fileOf.get(key).getFileName().toString(), key);
                shards.add(split.getString(key));
            }
            assertEquals(2, shards.size());
            TensorInfo q = c.tensor("model.layers.1.self_attn.q_proj.weight");
            assertEquals(QuantKind.NF4, q.kind());
            assertTrue(q.doubleQuant());
            assertArrayEquals(new long[] {64, 64}, q.shape());
            assertEquals(Set.copyOf(split.keys()), Set.copyOf(q.components()));

            // llm_int8_skip_modules: plain BF16 linears in the model dtype, decided from the keys present
            for (JsonValue v : m.getArray("unquantized_linears").values()) {
                String name = ((JsonString) v).value();
                TensorInfo t = c.tensor(name);
                assertEquals(QuantKind.PLAIN, t.kind(), name);
                assertEquals(DType.BF16, t.dtype(), name);
                assertArrayEquals(name.contains("down_proj") ? new long[] {64, 160} : new long[] {160, 64},
                        t.shape(), name);
            }
            assertEquals(11, c.tensors().stream().filter(TensorInfo::isQuantized).count());
            // tied: no lm_head anywhere, the embedding is the output projection
            assertTrue(c.find("lm_head.weight").isEmpty());
            assertTrue(c.storedTensors().stream().noneMatch(s -> s.name().startsWith("lm_head")));
            assertEquals(QuantKind.PLAIN, c.tensor("model.embed_tokens.weight").kind());
            assertEquals(Boolean.TRUE, c.config().orElseThrow().get("tie_word_embeddings"));
        }
    }

    /**
     * Tensors stored unchanged (embeddings, norms, lm_head, and the mixed checkpoint's skipped linears) read back
     * exactly as in the unquantized original: the same bytes, the same float32 values, and F16/BF16 reads that are
     * those values rounded once.
     */
    @ParameterizedTest
    @MethodSource("checkpoints")
    void plainTensorsReadBackExactly(String name) {
        Path original = original(name);
        boolean tied = name.equals("llama-h64-mixed");
        int compared = 0;
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name));
             Checkpoint o = Checkpoint.open(original);
             Arena arena = Arena.ofConfined()) {
            for (TensorInfo t : c.tensors()) {
                if (t.isQuantized()) {
                    continue;
                }
                TensorInfo ot = o.tensor(t.name());
                assertEquals(ot.dtype(), t.dtype(), t.name());
                assertArrayEquals(ot.shape(), t.shape(), t.name());
                assertArrayEquals(o.readBytes(t.name()), c.readBytes(t.name()), t.name());
                float[] want = o.readFloats(t.name());
                SyntheticFourBitTest.assertBits(want, 0, c.readFloats(t.name()), t.name());
                SyntheticFourBitTest.assertRoundedReads(c, t.name(), want);
                MemorySegment same = arena.allocate(want.length * 2L);
                c.read(t.name(), t.dtype(), same);
                assertArrayEquals(c.readBytes(t.name()), same.toArray(ValueLayout.JAVA_BYTE),
                        t.name() + " read in its own dtype is the stored bytes");
                compared++;
            }
            // every original tensor that is not a quantized linear is there, except a tied lm_head
            long plainInOriginal = o.tensors().stream().filter(t -> !c.find(t.name()).map(TensorInfo::isQuantized)
                    .orElse(false)).filter(t -> !(tied && t.name().equals("lm_head.weight"))).count();
            assertEquals(plainInOriginal, compared);
        }
        assertTrue(compared >= (tied ? 7 : 5));
    }
}

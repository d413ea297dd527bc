package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TensorInfo;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Files written by bitsandbytes 0.41.2: {@code "shape": null} in non-nested quant states (the shape then comes from
 * config.json where it can be derived), and one {@code nested_quant_map} kept for all layers by save_pretrained's
 * shared-tensor de-duplication.
 */
class LegacyFilesTest {
    private static final List<String> LINEARS = List.of("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
            "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj");

    @TempDir
    Path tmp;

    /** Llama config fields; a null value leaves the field out. */
    private static String config(Integer hidden, Integer heads, Integer kvHeads, Integer headDim, Integer inter) {
        StringBuilder sb = new StringBuilder("{\"model_type\": \"llama\"");
        Map<String, Integer> f = new LinkedHashMap<>();
        f.put("hidden_size", hidden);
        f.put("num_attention_heads", heads);
        f.put("num_key_value_heads", kvHeads);
        f.put("head_dim", headDim);
        f.put("intermediate_size", inter);
        f.forEach((k, v) -> {
            if (v != null) {
                sb.append(", \"").append(k).append("\": ").append(v);
            }
        });
        return sb.append(", \"quantization_config\": {\"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"nf4\"}}")
                .toString();
    }

    /** Quantizes each linear of layer 0 with {@code "shape": null}; returns the expected values per weight. */
    private static Map<String, float[]> legacyLayer(CheckpointBuilder b, Map<String, long[]> shapes) {
        Map<String, float[]> expected = new LinkedHashMap<>();
        long seed = 1;
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            String name = "model.layers.0." + e.getKey() + ".weight";
            BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(e.getValue(), seed++),
                    e.getValue(), "nf4", 64, false);
            q.addTo(b, name, DType.U8, "float16", false);
            expected.put(name, q.expected());
        }
        return expected;
    }

    private static Map<String, long[]> shapes(long q, long kv, long hidden, long inter) {
        Map<String, long[]> s = new LinkedHashMap<>();
        s.put("self_attn.q_proj", new long[] {q, hidden});
        s.put("self_attn.k_proj", new long[] {kv, hidden});
        s.put("self_attn.v_proj", new long[] {kv, hidden});
        s.put("self_attn.o_proj", new long[] {hidden, q});
        s.put("mlp.gate_proj", new long[] {inter, hidden});
        s.put("mlp.up_proj", new long[] {inter, hidden});
        s.put("mlp.down_proj", new long[] {hidden, inter});
        return s;
    }

    private void assertDerived(String config, Map<String, long[]> shapes, String name) {
        CheckpointBuilder b = new CheckpointBuilder().config(config);
        Map<String, float[]> expected = legacyLayer(b, shapes);
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve(name)))) {
            for (String linear : LINEARS) {
                String w = "model.layers.0." + linear + ".weight";
                TensorInfo t = c.tensor(w);
                assertEquals(QuantKind.NF4, t.kind(), w);
                assertArrayEquals(shapes.get(linear), t.shape(), w);
                SyntheticFourBitTest.assertBits(expected.get(w), 0, c.readFloats(w), w);
            }
        }
    }

    @Test
    void nullShapeOfLlamaLinearsWithGroupedQueryAttention() {
        // hidden 96, 6 heads of 16, 2 key/value heads
        assertDerived(config(96, 6, 2, null, 200), shapes(96, 32, 96, 200), "gqa");
    }

    @Test
    void nullShapeWithAnExplicitHeadDim() {
        // head_dim 32 with 4 heads over hidden 64: q is [128, 64] and o is [64, 128]
        assertDerived(config(64, 4, 2, 32, 100), shapes(128, 64, 64, 100), "headdim");
    }

    @Test
    void nullShapeWithoutKeyValueHeadsIsMultiHeadAttention() {
        assertDerived(config(48, 3, null, null, 130), shapes(48, 48, 48, 130), "mha");
    }

    @Test
    void nullShapeFromTheTextConfigOfAMultimodalModel() {
        String text = config(96, 6, 2, null, 200);
        assertDerived("{\"model_type\": \"llava\", \"text_config\": " + text + "}", shapes(96, 32, 96, 200), "vlm");
    }

    @Test
    void nullShapeThatCannotBeDerived() {
        String w = "model.layers.0.mlp.fc1.weight";
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(new long[] {40, 16}, 3),
                new long[] {40, 16}, "nf4", 64, false);
        Path withConfig = q.addTo(new CheckpointBuilder().config(config(16, 2, 2, null, 40)), w, DType.U8, "float16",
                false).write(tmp.resolve("fc1"));
        String detail = "quant state has \"shape\": null (bitsandbytes 0.41.2) and the shape cannot be derived from "
                + "config.json for this module";
        assertOpenFails(withConfig, w, detail);
        // a q_proj cannot be derived without a config either
        Path noConfig = q.addTo(new CheckpointBuilder(), "model.layers.0.self_attn.q_proj.weight", DType.U8,
                "float16", false).write(tmp.resolve("none"));
        assertOpenFails(noConfig, "model.layers.0.self_attn.q_proj.weight", detail);
    }

    @Test
    void nullShapeWhoseConfigDisagreesWithTheStoredBytes() {
        Map<String, long[]> s = new LinkedHashMap<>();
        s.put("mlp.gate_proj", new long[] {200, 96});
        CheckpointBuilder b = new CheckpointBuilder().config(config(96, 6, 2, null, 208));
        legacyLayer(b, s);
        assertOpenFails(b.write(tmp.resolve("wrong")), "model.layers.0.mlp.gate_proj.weight",
                "packed 4-bit weight holds 9600 bytes but [208, 96] (derived from config.json: the quant state has "
                        + "\"shape\": null) (19968 elements) needs 9984");
    }

    /**
     * A hostile config whose sizes multiply past 64 bits: 40 x (2^62 + 16) wraps to 640, exactly what a real
     * [40, 16] weight holds, so without an overflow check the tensor would open with a shape of 2^68 elements.
     */
    @Test
    void nullShapeWhoseConfigSizesOverflowIsNotDerived() {
        String w = "model.layers.0.mlp.gate_proj.weight";
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(new long[] {40, 16}, 3),
                new long[] {40, 16}, "nf4", 64, false);
        String config = "{\"model_type\": \"llama\", \"hidden_size\": " + ((1L << 62) + 16)
                + ", \"intermediate_size\": 40}";
        Path dir = q.addTo(new CheckpointBuilder().config(config), w, DType.U8, "float16", false)
                .write(tmp.resolve("overflow"));
        assertOpenFails(dir, w, "quant state has \"shape\": null (bitsandbytes 0.41.2) and the shape cannot be"
                + " derived from config.json for this module");
    }

    private static void assertOpenFails(Path dir, String tensor, String detail) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> Checkpoint.open(dir).close());
        assertEquals(dir.resolve("model.safetensors") + ": tensor '" + tensor + "': " + detail, e.getMessage());
    }

    /**
     * bitsandbytes 0.41.2 gave every layer the same dynamic-map tensor, so save_pretrained kept it under one name
     * only: the other layers borrow it (it is the same map for all).
     */
    @Test
    void nestedQuantMapMissingOnSomeLayersIsBorrowed() {
        CheckpointBuilder b = new CheckpointBuilder();
        Map<String, float[]> expected = new LinkedHashMap<>();
        for (int layer = 0; layer < 3; layer++) {
            String w = "model.layers." + layer + ".mlp.down_proj.weight";
            long[] shape = {40, 200 + layer};
            BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(shape, layer), shape, "nf4", 32,
                    true);
            q.addTo(b, w, DType.U8, "float16", true);
            expected.put(w, q.expected());
        }
        b.remove("model.layers.0.mlp.down_proj.weight.nested_quant_map");
        b.remove("model.layers.2.mlp.down_proj.weight.nested_quant_map");
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("shared")))) {
            for (Map.Entry<String, float[]> e : expected.entrySet()) {
                TensorInfo t = c.tensor(e.getKey());
                assertEquals(e.getKey().contains("layers.1"), t.components().contains(e.getKey()
                        + ".nested_quant_map"), e.getKey());
                SyntheticFourBitTest.assertBits(e.getValue(), 0, c.readFloats(e.getKey()), e.getKey());
            }
            assertEquals(3, c.tensors().size());
        }
    }

    @Test
    void nestedQuantMapMissingEverywhere() {
        String w = "model.layers.0.mlp.down_proj.weight";
        long[] shape = {40, 200};
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(shape, 9), shape, "nf4", 32, true);
        CheckpointBuilder b = q.addTo(new CheckpointBuilder(), w, DType.U8, "float16", true)
                .remove(w + ".nested_quant_map");
        assertOpenFails(b.write(tmp.resolve("none")), w, "missing bitsandbytes component " + w
                + ".nested_quant_map, and no other weight has one to share");
    }
}

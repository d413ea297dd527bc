package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class GgufModelTest {
    private static int[] bits(float[] f) {
        int[] b = new int[f.length];
        for (int i = 0; i < f.length; i++) {
            b[i] = Float.floatToRawIntBits(f[i]);
        }
        return b;
    }

    /**
     * The bits torch 2.13 (CPU) gives for convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors on Llama 3.1 8B's
     * rope parameters (head_dim 128, theta 500000, factor 8) and Llama 3.2's (factor 32): only the smoothed band
     * depends on the arithmetic, and it matches.
     */
    @Test
    void llama3RopeFactorsEqualTorchs() {
        int[] llama31 = bits(GgufModel.llama3RopeFactors(500000.0, 128, 8.0, 1.0, 4.0, 8192));
        assertEquals(64, llama31.length);
        assertArrayEquals(new int[] {0x3f800000, 0x3f9a8ed5, 0x3fc6d64a, 0x4001af1d, 0x402c732e, 0x406bcace,
            0x40a83c06, 0x41000000}, java.util.Arrays.copyOfRange(llama31, 28, 36));
        int[] llama32 = bits(GgufModel.llama3RopeFactors(500000.0, 64, 32.0, 1.0, 4.0, 8192));
        assertArrayEquals(new int[] {0x3f800000, 0x3fd35ec2, 0x4052b46f, 0x411aaaee, 0x42000000},
                java.util.Arrays.copyOfRange(llama32, 14, 19));
        int[] llama32x128 = bits(GgufModel.llama3RopeFactors(500000.0, 128, 32.0, 1.0, 4.0, 8192));
        assertArrayEquals(new int[] {0x3f800000, 0x3f9e126b, 0x3fd35ec2, 0x4011b4ca, 0x4052b46f, 0x40a57db9,
            0x411aaaee, 0x42000000}, java.util.Arrays.copyOfRange(llama32x128, 28, 36));
    }

    /** gguf-py's size_label, as the converter writes it into general.size_label. */
    @Test
    void sizeLabels() {
        assertEquals("119K", GgufModel.sizeLabel(119_232));
        assertEquals("8.0B", GgufModel.sizeLabel(8_030_261_248L));
        assertEquals("1.2B", GgufModel.sizeLabel(1_235_814_400L));
    }

    /**
     * The converter reads the files of a sharded export in order and each file's tensors sorted by name
     * (gguf-py's SafetensorsLocal), so a tensor in the second shard comes after every tensor of the first.
     */
    @Test
    void tensorsFollowTheShardsThenTheNames() {
        dev.dequant4j.internal.json.JsonObject config = dev.dequant4j.internal.json.Json.parseObject(
                ("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_attention_heads\": 4,"
                        + " \"num_key_value_heads\": 2, \"num_hidden_layers\": 1, \"vocab_size\": 256,"
                        + " \"intermediate_size\": 160}").getBytes(java.nio.charset.StandardCharsets.UTF_8));
        java.nio.file.Path f = java.nio.file.Path.of("model.safetensors");
        GgufModel m = GgufModel.of(config, f, java.util.List.of(
                new GgufModel.Source("model.embed_tokens.weight", new long[] {256, 64}, f, 0),
                new GgufModel.Source("model.norm.weight", new long[] {64}, f, 1),
                new GgufModel.Source("lm_head.weight", new long[] {256, 64}, f, 1),
                new GgufModel.Source("model.layers.0.self_attn.q_proj.weight", new long[] {64, 64}, f, 0)),
                dev.dequant4j.GgufFileType.F16, "m");
        assertEquals(java.util.List.of("token_embd.weight", "blk.0.attn_q.weight", "output.weight",
                "output_norm.weight"), m.tensors().stream().map(GgufModel.Tensor::name).toList());
        assertEquals(4, m.tensors().get(1).permuteHeads(), "Q rows permuted for n_head");
        assertEquals(GgmlType.F32, m.tensors().get(3).type(), "norms stay F32");
    }
}

package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.internal.gguf.QuantMix.Mix;
import dev.dequant4j.internal.gguf.QuantMix.ModelFacts;
import dev.dequant4j.internal.gguf.QuantMix.TensorInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import java.util.stream.Stream;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.MethodSource;

/** QuantMix picks the types, in the order, that llama.cpp's llama-quantize wrote or listed (fixtures/gguf/README.md). */
class QuantMixTest {
    static long num(GgufMetadata m, String key) {
        GgufMetadata.Value v = m.get(key);
        return v == null ? 0 : ((Number) v.value()).longValue();
    }

    /** The files llama-quantize wrote: the types and the tensor order of the output, from the F32 input's tensors. */
    @ParameterizedTest
    @CsvSource({"llama256/llama256-f32.gguf, llama256/llama256-q4_k_m.gguf, Q4_K_M",
        "llama256/llama256-f32.gguf, llama256/llama256-q5_k_m.gguf, Q5_K_M",
        "llama256/llama256-f32.gguf, llama256/llama256-q6_k.gguf, Q6_K",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q4_k_m.gguf, Q4_K_M",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q5_k_m.gguf, Q5_K_M",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q6_k.gguf, Q6_K",
        "llama-bpe/llama-lora-f16.gguf, llama-bpe/llama-lora-f16-q4_k_m.gguf, Q4_K_M"})
    void typesAndOrderOfLlamaQuantizeOutput(String f32, String quantized, Mix mix) {
        try (GgufFile in = GgufFile.open(GgmlQuantizeTest.fixture(f32));
                GgufFile out = GgufFile.open(GgmlQuantizeTest.fixture(quantized))) {
            List<TensorInfo> tensors = new ArrayList<>();
            for (GgufFile.Tensor t : in.tensors().values()) {
                tensors.add(new TensorInfo(t.name(), t.ne(), t.type()));
            }
            Map<String, GgmlType> expected = new LinkedHashMap<>();
            out.tensors().values().forEach(t -> expected.put(t.name(), t.type()));
            Map<String, GgmlType> ours = QuantMix.types(mix, ModelFacts.of(in.metadata()), tensors);
            assertEquals(List.copyOf(expected.entrySet()), List.copyOf(ours.entrySet()));
            assertEquals(mix.fileType, num(out.metadata(), "general.file_type"));
        }
    }

    /**
     * llama-quantize --dry-run on larger shapes (32 and 80 layers, a 70B-like GQA model, 8 and 4 experts, tied
     * embeddings, falcon's fused qkv, ffn rows of 200 that fit no block): the listing's types and order.
     */
    static Stream<Arguments> dryRuns() {
        return Stream.of("llama32", "llama80", "qwen2-80-tied", "mixtral8", "qwen3moe4", "falcon12", "llama-ffn200")
                .flatMap(m -> Arrays.stream(Mix.values()).map(mix -> Arguments.of(m, mix)));
    }

    @ParameterizedTest
    @MethodSource("dryRuns")
    void typesOfLlamaQuantizeDryRun(String model, Mix mix) throws IOException {
        List<String> lines = Files.readAllLines(GgmlQuantizeTest.fixture("quant/mix/" + model + "-" + mix + ".txt"));
        String[] f = lines.getFirst().split(" ");
        ModelFacts facts = new ModelFacts(f[1], Integer.parseInt(f[2]), Integer.parseInt(f[3]),
                Integer.parseInt(f[4]), Integer.parseInt(f[5]));
        List<TensorInfo> tensors = new ArrayList<>();
        List<String> expected = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] p = line.split(" ");
            long[] ne = Arrays.stream(p[3].split(",")).mapToLong(Long::parseLong).toArray();
            tensors.add(new TensorInfo(p[0], ne, GgmlType.valueOf(p[1])));
            expected.add(p[0] + " " + p[2]);
        }
        // the listing is in llama-quantize's order; hand the tensors over in the converter's (reverse) order
        List<TensorInfo> shuffled = new ArrayList<>(tensors.reversed());
        List<String> ours = new ArrayList<>();
        QuantMix.types(mix, facts, shuffled).forEach((name, type) -> ours.add(name + " " + type));
        assertEquals(expected, ours);
    }

    @Test
    void llamaOrderSortsByLayerNumberThenName() {
        List<String> names = new ArrayList<>(List.of("blk.10.attn_q.weight", "blk.2.ffn_up.weight", "output.weight",
                "blk.2.attn_v.weight", "token_embd.weight", "blk.0.ffn_down.weight", "output_norm.weight"));
        names.sort(QuantMix.LLAMA_ORDER);
        assertEquals(List.of("output.weight", "output_norm.weight", "token_embd.weight", "blk.0.ffn_down.weight",
                "blk.2.attn_v.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"), names);
    }

    @Test
    void expertTensorWithoutLayerIsRefusedAsLlamaQuantizeDoes() {
        ModelFacts moe = new ModelFacts("llama", 2, 4, 1, 8);
        List<TensorInfo> t = List.of(new TensorInfo("ffn_down_exps.weight", new long[] {256, 256, 8}, GgmlType.F16));
        assertThrows(IllegalArgumentException.class, () -> QuantMix.types(Mix.Q4_K_M, moe, t));
        List<TensorInfo> t2 = List.of(new TensorInfo("blk.2.ffn_down_exps.weight", new long[] {256, 256, 8},
                GgmlType.F16));
        assertThrows(IllegalArgumentException.class, () -> QuantMix.types(Mix.Q4_K_M, moe, t2));
    }
}

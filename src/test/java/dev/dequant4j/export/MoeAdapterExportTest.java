package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.lora.TestFiles;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Consumer;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * LoRA on MoE experts, against real files: Mixtral and Qwen2-MoE checkpoints saved by transformers 5.17 with
 * bitsandbytes NF4 + double quant, adapters saved by PEFT 0.21 (target_parameters on the fused experts, and a
 * per-expert adapter from transformers 4.57), and PEFT's own fp32 merge_and_unload as the reference (see
 * fixtures/real/moe-adapters/README.md).
 */
class MoeAdapterExportTest {
    /** F32 tolerance against PEFT's merge: the deltas are summed over the rank in another order (docs/MERGE.md). */
    static final double MAX_ABS_DIFF = 1e-6;

    @TempDir
    Path tmp;

    static Path root() {
        return Fixtures.root().resolve("real/moe-adapters");
    }

    static List<String> pairs() throws IOException {
        try (Stream<Path> s = Files.list(root().resolve("expected/merged"))) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void mergesAsPeftDoesInTheLayoutTransformersSaves(String pair) {
        String checkpoint = pair.substring(0, pair.indexOf("__"));
        String adapter = pair.substring(pair.indexOf("__") + 2);
        Path expectedDir = root().resolve("expected/merged").resolve(pair);
        Path out = tmp.resolve("out");
        long merged;
        try (Checkpoint c = Checkpoint.open(root().resolve("checkpoints").resolve(checkpoint));
             LoraAdapter a = LoraAdapter.open(root().resolve("adapters").resolve(adapter))) {
            ExportResult r = Export.of(c).adapter(a).dtype(DType.F32).to(out);
            merged = r.stats().stream().filter(s -> s.mergeSteps() > 0).count();
            assertTrue(r.stats().stream().filter(s -> s.name().contains(".experts."))
                    .allMatch(s -> s.mergeSteps() > 0), "every expert tensor gets its delta");
            for (TensorStats s : r.stats()) {
                assertTrue(s.mergeSteps() == 0 || s.maxAbsDelta() > 0, s.name());
            }
        }
        double maxAbs = 0;
        double maxRel = 0;
        long differ = 0;
        long total = 0;
        try (Checkpoint want = Checkpoint.open(expectedDir.resolve("expected_merged_f32.safetensors"));
             Checkpoint got = Checkpoint.open(out);
             Checkpoint original = Checkpoint.open(root().resolve("expected/models")
                     .resolve(checkpoint.replace("-nf4-dq", "-bf16")).resolve("model.safetensors"))) {
            assertEquals(layout(original), layout(got), "the 16-bit original's tensor names and shapes");
            assertEquals(layout(want), layout(got), "the names and shapes PEFT's merged model saves with");
            for (TensorInfo t : want.tensors()) {
                float[] w = want.readFloats(t.name());
                float[] g = got.readFloats(t.name());
                for (int i = 0; i < w.length; i++) {
                    double d = Math.abs((double) w[i] - g[i]);
                    maxAbs = Math.max(maxAbs, d);
                    maxRel = Math.max(maxRel, d / Math.max(Math.abs(w[i]), 1e-3));
                    differ += w[i] != g[i] ? 1 : 0;
                }
                total += w.length;
            }
        }
        System.out.printf("%s: %d merged tensors, %d / %d F32 elements differ, max abs %.3g, max rel %.3g%n", pair,
                merged, differ, total, maxAbs, maxRel);
        assertTrue(maxAbs <= MAX_ABS_DIFF, pair + ": max abs diff " + maxAbs);
    }

    @Test
    void allLinearOnMixtralReadsAsPeftResolvedIt() {
        try (LoraAdapter a = LoraAdapter.open(root().resolve("adapters/mixtral-lora-all-linear"))) {
            Map<String, LoraAdapter.Module> byTensor = new TreeMap<>();
            a.modules().forEach(m -> byTensor.put(m.tensor(), m));
            LoraAdapter.Module gateUp = byTensor.get("model.layers.0.mlp.experts.gate_up_proj");
            LoraAdapter.Module down = byTensor.get("model.layers.0.mlp.experts.down_proj");
            LoraAdapter.Module router = byTensor.get("model.layers.1.mlp.gate.weight");
            assertEquals(LoraAdapter.Kind.EXPERTS, gateUp.kind());
            assertEquals(List.of("base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight",
                    "base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight"), gateUp.keys());
            // rank_pattern {".*\.gate_up_proj": 8} and alpha_pattern 16, as PEFT adds them for the fused w1 + w3
            assertEquals(8, gateUp.r());
            assertEquals(16.0, gateUp.alpha());
            assertEquals(2.0f, gateUp.scaling());
            assertEquals(LoraAdapter.Kind.EXPERTS, down.kind());
            assertEquals(4, down.r());
            assertEquals(LoraAdapter.Kind.LINEAR, router.kind());
            assertEquals(4, router.r());
        }
    }

    @Test
    void targetParametersPatternsMatchTheParameterName() {
        try (LoraAdapter a = LoraAdapter.open(root().resolve("adapters/mixtral-lora-target-params"))) {
            Map<String, LoraAdapter.Module> byTensor = new TreeMap<>();
            a.modules().forEach(m -> byTensor.put(m.tensor(), m));
            LoraAdapter.Module gateUp = byTensor.get("model.layers.1.mlp.experts.gate_up_proj");
            LoraAdapter.Module down = byTensor.get("model.layers.1.mlp.experts.down_proj");
            assertEquals(4, gateUp.r());
            assertEquals((float) (12 / Math.sqrt(4)), gateUp.scaling());
            assertEquals(2, down.r());
            assertEquals((float) (8 / Math.sqrt(2)), down.scaling());
        }
    }

    @Test
    void expertParametersDequant4jDoesNotKnowAreRefused() throws IOException {
        Path dir = withConfig("mixtral-lora-all-linear", c -> c.put("target_parameters",
                Json.parse("[\"gate_up_proj\", \"gate_up_proj_bias\", \"down_proj\"]")));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertTrue(e.detail().contains("target_parameters names parameter 'gate_up_proj_bias' of expert module"
                + " 'model.layers.0.mlp.experts'"), e.getMessage());
    }

    @Test
    void anExpertCountThatDoesNotMatchTheBaseIsRefused() throws IOException {
        // r=2 for gate_up_proj reads lora_A [32, 64] as 16 experts; the base has 4: nothing is merged silently
        Path dir = withConfig("mixtral-lora-all-linear", c -> c.put("rank_pattern",
                Json.parse("{\".*\\\\.gate_up_proj\": 2}")));
        try (Checkpoint c = Checkpoint.open(root().resolve("checkpoints/mixtral-nf4-dq"));
             LoraAdapter a = LoraAdapter.open(dir)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).adapter(a).dtype(DType.F32).to(tmp.resolve("never")));
            assertEquals("base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight", e.tensor().orElse(""));
            assertTrue(e.detail().contains("holds r=2 for 16 experts, but") && e.detail().contains("has 4 experts"
                    + " under 'model.layers.0.block_sparse_moe.experts'"), e.getMessage());
            assertTrue(Files.notExists(tmp.resolve("never")));
        }
    }

    @Test
    void aMixtralAdapterDoesNotFitQwen2Moe() {
        try (Checkpoint c = Checkpoint.open(root().resolve("checkpoints/qwen2moe-nf4-dq"));
             LoraAdapter a = LoraAdapter.open(root().resolve("adapters/mixtral-lora-target-params"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).adapter(a).dtype(DType.F32).to(tmp.resolve("never")));
            assertTrue(e.getMessage().contains("adapter for another model"), e.getMessage());
        }
    }

    private static Map<String, List<Long>> layout(Checkpoint c) {
        Map<String, List<Long>> out = new TreeMap<>();
        for (TensorInfo t : c.tensors()) {
            out.put(t.name(), Arrays.stream(t.shape()).boxed().toList());
        }
        return out;
    }

    private Path withConfig(String adapter, Consumer<Map<String, JsonValue>> edit) throws IOException {
        return TestFiles.withEditedConfig(root().resolve("adapters").resolve(adapter),
                tmp.resolve(adapter + "-edited"), edit);
    }
}

package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.MergedModel;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Adapters saved by PEFT 0.21 from the bitsandbytes models of {@link RealCheckpointTest} (LoRA, rsLoRA, DoRA,
 * modules_to_save, embedding LoRA; fixtures/real/README.md) merge as PEFT's fp32 {@code merge_and_unload} on the
 * dequantized base does: the same tensors change, each value within 1e-6 absolute (the limit of docs/MERGE.md).
 * Adapters on a tied model are {@link TiedEmbeddingMergeTest}'s.
 */
class RealAdapterMergeTest {
    static final double LIMIT = 1e-6;

    static List<String> adapters() {
        return Fixtures.realNames("adapters").stream().map(n -> "adapter-" + n).filter(n -> !onTiedEmbedding(n))
                .toList();
    }

    /** An adapter that changes the embedding or output layer of a model that ties them. */
    static boolean onTiedEmbedding(String adapter) {
        try {
            JsonObject m = manifest(adapter);
            return m.getBoolean("tied", false) && m.getArray("merged_tensors").values().stream()
                    .anyMatch(v -> ((JsonString) v).value().endsWith("embed_tokens.weight"));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static JsonObject manifest(String adapter) throws IOException {
        return Json.readObject(Fixtures.real().resolve("manifest.json"), Json.MAX_FILE_BYTES).getObject("adapters")
                .getObject(adapter.substring("adapter-".length()));
    }

    /** The checkpoint an adapter was trained on: {@code arch-quant}. */
    static Path base(String adapter) throws IOException {
        JsonObject m = manifest(adapter);
        return Fixtures.real().resolve(m.getString("arch") + "-" + m.getString("quant"));
    }

    @ParameterizedTest
    @MethodSource("adapters")
    void mergeMatchesPeftFp32MergeAndUnload(String adapter) throws IOException {
        Path dir = Fixtures.real().resolve(adapter);
        try (Checkpoint base = Checkpoint.open(base(adapter));
             LoraAdapter lora = LoraAdapter.open(dir);
             MergedModel merged = MergedModel.of(base, List.of(lora));
             Checkpoint want = Checkpoint.open(dir.resolve("expected_merged_f32.safetensors"))) {
            Set<String> changed = new TreeSet<>();
            merged.tensorNames().stream().filter(merged::isMerged).forEach(changed::add);
            Set<String> expected = new TreeSet<>();
            want.tensors().forEach(t -> expected.add(t.name()));
            assertEquals(expected, changed, "tensors PEFT's merge changes");
            double worst = 0;
            for (TensorInfo t : want.tensors()) {
                worst = Math.max(worst, maxAbsDiff(want.readFloats(t.name()), merged.readFloats(t.name()), t.name()));
            }
            System.out.printf(Locale.ROOT, "%s: %d tensors, max |ours - PEFT| = %.3g%n", adapter, expected.size(),
                    worst);
        }
    }

    static double maxAbsDiff(float[] want, float[] got, String name) {
        assertEquals(want.length, got.length, name);
        double worst = 0;
        for (int i = 0; i < want.length; i++) {
            double d = Math.abs((double) want[i] - got[i]);
            assertTrue(d <= LIMIT, () -> name + ": differs from PEFT by more than " + LIMIT);
            worst = Math.max(worst, d);
        }
        return worst;
    }
}

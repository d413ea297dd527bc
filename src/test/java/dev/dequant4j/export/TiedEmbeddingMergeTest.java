package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.MergedModel;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Adapters on the embedding or the {@code lm_head} of Gemma 2 and Gemma 3, which tie them (docs/MERGE.md, "Tied
 * embedding and output layer"). By default the export is the model PEFT trained: checked against the real PEFT
 * model's unmerged forward on a prompt (the embedding module's output, which Gemma scales by √hidden, and the output
 * layer's output for its recorded input). With {@link TiedEmbeddings#MERGE_AND_UNLOAD} it is PEFT's
 * {@code merge_and_unload()}: checked against the tensors that merge changed.
 */
class TiedEmbeddingMergeTest {
    /** fp32 sums of 64 products, PEFT's as base + LoRA, ours over the merged weight: relative to the largest value. */
    static final double FORWARD_LIMIT = 1e-5;

    @TempDir
    Path tmp;

    static List<String> adapters() {
        return Fixtures.realNames("adapters").stream().map(n -> "adapter-" + n)
                .filter(RealAdapterMergeTest::onTiedEmbedding).toList();
    }

    @ParameterizedTest
    @MethodSource("adapters")
    void asTrainedEqualsPeftsUnmergedForward(String adapter) throws IOException {
        Path dir = Fixtures.real().resolve(adapter);
        try (Checkpoint base = Checkpoint.open(RealAdapterMergeTest.base(adapter));
             LoraAdapter lora = LoraAdapter.open(dir);
             MergedModel trained = MergedModel.of(base, List.of(lora));
             MergedModel peftMerged = MergedModel.of(base, List.of(lora), TiedEmbeddings.MERGE_AND_UNLOAD);
             Checkpoint forward = Checkpoint.open(dir.resolve("expected_forward_f32.safetensors"))) {
            double[] ours = forwardError(base, trained, forward);
            double[] merged = forwardError(base, peftMerged, forward);
            System.out.printf(Locale.ROOT, "%s: as trained: embedding %.3g, lm_head %.3g; merge_and_unload:"
                    + " embedding %.3g, lm_head %.3g (relative to PEFT's unmerged forward)%n", adapter, ours[0],
                    ours[1], merged[0], merged[1]);
            assertTrue(ours[0] <= FORWARD_LIMIT, adapter + ": embedding output off by " + ours[0]);
            assertTrue(ours[1] <= FORWARD_LIMIT, adapter + ": lm_head output off by " + ours[1]);
            boolean oneDelta = RealAdapterMergeTest.manifest(adapter).getBoolean("factors_tied", false);
            assertEquals(!oneDelta, trained.tensorNames().contains(outputName(base)),
                    "the output layer is untied unless the adapter trained one set of factors for both sides");
            assertTrue(merged[0] > 1e-3 || merged[1] > 1e-3, "the fixture must tell the two semantics apart");
        }
    }

    @ParameterizedTest
    @MethodSource("adapters")
    void mergeAndUnloadEqualsPeftsMerge(String adapter) throws IOException {
        Path dir = Fixtures.real().resolve(adapter);
        try (Checkpoint base = Checkpoint.open(RealAdapterMergeTest.base(adapter));
             LoraAdapter lora = LoraAdapter.open(dir);
             MergedModel merged = MergedModel.of(base, List.of(lora), TiedEmbeddings.MERGE_AND_UNLOAD);
             Checkpoint want = Checkpoint.open(dir.resolve("expected_merged_f32.safetensors"))) {
            Set<String> changed = new TreeSet<>();
            merged.tensorNames().stream().filter(merged::isMerged).forEach(changed::add);
            Set<String> expected = new TreeSet<>();
            want.tensors().forEach(t -> expected.add(t.name()));
            assertEquals(expected, changed, "PEFT's merge changes the shared tensor, which stays tied");
            assertFalse(merged.tensorNames().contains(outputName(base)));
            for (TensorInfo t : want.tensors()) {
                RealAdapterMergeTest.maxAbsDiff(want.readFloats(t.name()), merged.readFloats(t.name()), t.name());
            }
        }
    }

    /** Gemma 3: the untied output layer is {@code language_model.lm_head.weight}, and both configs untie. */
    @Test
    void exportUntiesGemma3sConfigAndWritesTheOutputLayer() throws IOException {
        Path out = tmp.resolve("out");
        try (Checkpoint base = Checkpoint.open(Fixtures.real().resolve("gemma3-nf4-dq"));
             LoraAdapter lora = LoraAdapter.open(Fixtures.real().resolve("adapter-gemma3-lmhead"))) {
            Export.of(base).adapter(lora).dtype(DType.F32).threads(2).to(out);
        }
        JsonObject original = Json.readObject(Fixtures.real().resolve("gemma3-bf16/original-header.json"),
                Json.MAX_FILE_BYTES);
        Set<String> want = new TreeSet<>(original.keys());
        want.add("language_model.lm_head.weight");
        try (Checkpoint e = Checkpoint.open(out)) {
            Set<String> got = new TreeSet<>();
            e.tensors().forEach(t -> got.add(t.name()));
            assertEquals(want, got);
            Map<String, Object> cfg = e.config().orElseThrow();
            assertEquals(false, cfg.get("tie_word_embeddings"));
            assertEquals(false, ((Map<?, ?>) cfg.get("text_config")).get("tie_word_embeddings"));
        }
    }

    /**
     * Max |ours − PEFT| / max |PEFT| of the embedding module's output on the prompt and of the output layer's
     * output for PEFT's recorded input, with the weights {@code m} gives (the output layer is the embedding if tied).
     */
    static double[] forwardError(Checkpoint base, MergedModel m, Checkpoint forward) {
        String embName = embeddingName(base);
        String lmName = m.tensorNames().contains(outputName(base)) ? outputName(base) : embName;
        int hidden = (int) m.shape(embName)[1];
        float[] emb = m.readFloats(embName);
        float[] lm = m.readFloats(lmName);
        int[] prompt = ints(forward, "prompt");
        float scale = (float) Math.sqrt(hidden);  // Gemma's embed_scale, rounded to the weights' dtype (fp32)
        float[] embOut = forward.readFloats("embed_out");
        double embErr = 0;
        double embMax = 0;
        for (int i = 0; i < prompt.length; i++) {
            for (int h = 0; h < hidden; h++) {
                float want = embOut[i * hidden + h];
                embErr = Math.max(embErr, Math.abs(want - scale * emb[prompt[i] * hidden + h]));
                embMax = Math.max(embMax, Math.abs(want));
            }
        }
        float[] in = forward.readFloats("lm_head_in");
        float[] outs = forward.readFloats("lm_head_out");
        int vocab = lm.length / hidden;
        double lmErr = 0;
        double lmMax = 0;
        for (int i = 0; i < prompt.length; i++) {
            for (int v = 0; v < vocab; v++) {
                double acc = 0;
                for (int h = 0; h < hidden; h++) {
                    acc += (double) in[i * hidden + h] * lm[v * hidden + h];
                }
                float want = outs[i * vocab + v];
                lmErr = Math.max(lmErr, Math.abs(want - acc));
                lmMax = Math.max(lmMax, Math.abs(want));
            }
        }
        return new double[] {embErr / embMax, lmErr / lmMax};
    }

    static String embeddingName(Checkpoint base) {
        return base.tensors().stream().map(TensorInfo::name).filter(n -> n.endsWith("model.embed_tokens.weight"))
                .findFirst().orElseThrow();
    }

    static String outputName(Checkpoint base) {
        String e = embeddingName(base);
        return e.substring(0, e.length() - "model.embed_tokens.weight".length()) + "lm_head.weight";
    }

    static int[] ints(Checkpoint c, String name) {
        java.nio.IntBuffer b = java.nio.ByteBuffer.wrap(c.readBytes(name)).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                .asIntBuffer();
        int[] out = new int[b.remaining()];
        b.get(out);
        return out;
    }
}

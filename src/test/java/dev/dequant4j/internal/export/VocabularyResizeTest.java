package dev.dequant4j.internal.export;

import static dev.dequant4j.internal.lora.TestFiles.config;
import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.lora.TestFiles;
import dev.dequant4j.internal.lora.TestFiles.T;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A fine-tune that added tokens: the adapter carries the whole resized embedding and output layer, and the export
 * writes them at their new size, with config.json's {@code vocab_size} and the adapter's tokenizer to match.
 * Expected values come from the hand-built tensors and PEFT's formulas in double precision.
 */
class VocabularyResizeTest {
    @TempDir
    Path tmp;

    private static final int DIM = 3;
    private static final int OLD = 10;
    private static final int NEW = 12;

    private final T embed = random("model.embed_tokens.weight", DType.F32, new long[] {OLD, DIM}, 1, 1);
    private final T head = random("lm_head.weight", DType.F32, new long[] {OLD, DIM}, 2, 1);
    private final T norm = random("model.norm.weight", DType.F32, new long[] {DIM}, 3, 1);

    private Path base(boolean tied) throws Exception {
        Path dir = TestFiles.model(tmp.resolve(tied ? "tied" : "untied"),
                Map.of("vocab_size", OLD, "tie_word_embeddings", tied, "torch_dtype", "float32"),
                tied ? List.of(embed, norm) : List.of(embed, head, norm));
        Files.writeString(dir.resolve("tokenizer.json"), "{\"base\": true}");
        Files.writeString(dir.resolve("tokenizer.model"), "base sentencepiece");
        Files.writeString(dir.resolve("generation_config.json"), "{\"do_sample\": false}");
        return dir;
    }

    private static JsonObject writtenConfig(Path out) throws Exception {
        return Json.parseObject(Files.readAllBytes(out.resolve("config.json")));
    }

    private static float[] read(Path out, String name) {
        try (Checkpoint c = Checkpoint.open(out)) {
            return c.readFloats(name);
        }
    }

    @Test
    void resizedEmbeddingAndOutputLayerWithLoraOnTopAndTheAdaptersTokenizer() throws Exception {
        Path base = base(false);
        T newEmbed = random("model.embed_tokens.weight", DType.BF16, new long[] {NEW, DIM}, 4, 1);
        T newHead = random("lm_head.weight", DType.F32, new long[] {NEW, DIM}, 5, 1);
        T ea = random("model.embed_tokens.lora_embedding_A", DType.F32, new long[] {2, NEW}, 6, 1);
        T eb = random("model.embed_tokens.lora_embedding_B", DType.F32, new long[] {DIM, 2}, 7, 1);
        T rows = random("model.embed_tokens.token_adapter.trainable_tokens_delta", DType.F32, new long[] {1, DIM},
                8, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 4, "modules_to_save",
                List.of("embed_tokens", "lm_head"), "trainable_token_indices", List.of(NEW - 1)),
                List.of(newEmbed, newHead, ea, eb, rows));
        Files.writeString(ad.resolve("tokenizer.json"), "{\"added\": [\"<tool>\", \"</tool>\"]}");
        Files.writeString(ad.resolve("tokenizer_config.json"), "{\"model_max_length\": 8192}");
        Path out = tmp.resolve("out");
        ExportResult r;
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            r = Export.of(c).adapter(l).dtype(DType.F32).to(out);
        }
        // PEFT's order: replacement, then the embedding LoRA (s = 4/2), then the trainable token row.
        double[] want = new double[NEW * DIM];
        for (int v = 0; v < NEW; v++) {
            for (int d = 0; d < DIM; d++) {
                double acc = 0;
                for (int k = 0; k < 2; k++) {
                    acc += eb.at(d, k) * ea.at(k, v);
                }
                want[v * DIM + d] = newEmbed.values()[v * DIM + d] + 2.0 * acc;
            }
        }
        for (int d = 0; d < DIM; d++) {
            want[(NEW - 1) * DIM + d] = rows.values()[d];
        }
        float[] got = read(out, "model.embed_tokens.weight");
        assertEquals(want.length, got.length);
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i], got[i], 2e-6, "embedding element " + i);
        }
        assertArrayEquals(newHead.values(), read(out, "lm_head.weight"));
        assertArrayEquals(norm.values(), read(out, "model.norm.weight"));
        try (Checkpoint c = Checkpoint.open(out)) {
            assertArrayEquals(new long[] {NEW, DIM}, c.tensor("lm_head.weight").shape());
        }

        assertEquals(NEW, writtenConfig(out).getLong("vocab_size"));
        assertEquals("{\"added\": [\"<tool>\", \"</tool>\"]}", Files.readString(out.resolve("tokenizer.json")));
        assertEquals("{\"model_max_length\": 8192}", Files.readString(out.resolve("tokenizer_config.json")));
        assertFalse(Files.exists(out.resolve("tokenizer.model")), "the base's tokenizer files are not mixed in");
        assertEquals("{\"do_sample\": false}", Files.readString(out.resolve("generation_config.json")));
        assertTrue(Manifest.verify(out).isEmpty());

        TensorStats head = r.stats().stream().filter(s -> s.name().equals("lm_head.weight")).findFirst()
                .orElseThrow();
        double maxDelta = 0;
        for (int i = 0; i < NEW * DIM; i++) {
            double before = i < OLD * DIM ? this.head.values()[i] : 0;
            maxDelta = Math.max(maxDelta, Math.abs(newHead.values()[i] - before));
        }
        assertEquals(maxDelta, head.maxAbsDelta(), 1e-7, "new rows count as changed from zero");
    }

    @Test
    void tiedModelWithASavedEmbeddingLayerAndNoTokenizerInTheAdapter() throws Exception {
        Path base = base(true);
        T saved = random("model.embed_tokens.base_layer.weight", DType.F32, new long[] {NEW, DIM}, 4, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2), List.of(saved));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            Export.of(c).adapter(l).to(out);
        }
        assertArrayEquals(saved.values(), read(out, "model.embed_tokens.weight"));
        try (Checkpoint c = Checkpoint.open(out)) {
            assertFalse(c.tensors().stream().anyMatch(t -> t.name().equals("lm_head.weight")),
                    "the output layer stays tied");
        }
        assertEquals(NEW, writtenConfig(out).getLong("vocab_size"));
        assertEquals("{\"base\": true}", Files.readString(out.resolve("tokenizer.json")),
                "without a tokenizer in the adapter the base's is kept (and a warning logged)");
    }

    @Test
    void aSecondAdapterFitsTheResizedVocabulary() throws Exception {
        Path base = base(true);
        T saved = random("model.embed_tokens.weight", DType.F32, new long[] {NEW, DIM}, 4, 1);
        Path first = TestFiles.adapter(tmp.resolve("first"), config(2, 2, "modules_to_save",
                List.of("embed_tokens")), List.of(saved));
        T rows = random("model.embed_tokens.token_adapter.trainable_tokens_delta", DType.F32, new long[] {1, DIM},
                5, 1);
        Path second = TestFiles.adapter(tmp.resolve("second"), config(2, 2, "trainable_token_indices",
                List.of(OLD + 1)), List.of(rows));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter a = LoraAdapter.open(first);
             LoraAdapter b = LoraAdapter.open(second)) {
            Export.of(c).adapter(a).adapter(b).to(out);
        }
        float[] want = saved.values().clone();
        System.arraycopy(rows.values(), 0, want, (OLD + 1) * DIM, DIM);
        assertArrayEquals(want, read(out, "model.embed_tokens.weight"));

        // Alone, the second adapter's token index is outside the base's vocabulary.
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter b = LoraAdapter.open(second)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).adapter(b).to(tmp.resolve("alone")));
            assertTrue(e.getMessage().contains("index " + (OLD + 1) + " is outside"), e.getMessage());
        }
    }

    private Dequant4jException refused(Path base, Path adapter) {
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(adapter)) {
            Path out = tmp.resolve("refused");
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Export.of(c).adapter(l).to(out));
            assertFalse(Files.exists(out), "nothing is written");
            return e;
        }
    }

    @Test
    void theOutputLayerMustBeResizedWithTheEmbedding() throws Exception {
        T saved = random("model.embed_tokens.weight", DType.F32, new long[] {NEW, DIM}, 4, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save", List.of("embed_tokens")),
                List.of(saved));
        Dequant4jException e = refused(base(false), ad);
        assertTrue(e.getMessage().contains("base_model.model.model.embed_tokens.weight"), e.getMessage());
        assertTrue(e.getMessage().contains("resizes the vocabulary of 'model.embed_tokens.weight' from 10 to 12 rows,"
                + " but 'lm_head.weight' ends with 10 rows"), e.getMessage());
    }

    @Test
    void aLoraThatNeedsMoreRowsWithoutTheResizedWeightsIsRefused() throws Exception {
        T ea = random("model.embed_tokens.lora_embedding_A", DType.F32, new long[] {2, NEW}, 6, 1);
        T eb = random("model.embed_tokens.lora_embedding_B", DType.F32, new long[] {DIM, 2}, 7, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2), List.of(ea, eb));
        Dequant4jException e = refused(base(true), ad);
        assertTrue(e.getMessage().contains("need an embedding of [12, 3]"), e.getMessage());
        assertTrue(e.getMessage().contains("the adapter must then carry the whole resized embedding"),
                e.getMessage());
    }

    @Test
    void onlyVocabularyMatricesMayChangeShape() throws Exception {
        T up = random("model.layers.0.mlp.up_proj.weight", DType.F32, new long[] {6, DIM}, 9, 1);
        Path base = TestFiles.model(tmp.resolve("b"), Map.of("vocab_size", OLD), List.of(embed, up));
        T bigger = random("model.layers.0.mlp.up_proj.weight", DType.F32, new long[] {8, DIM}, 4, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save", List.of("up_proj")),
                List.of(bigger));
        Dequant4jException e = refused(base, ad);
        assertTrue(e.getMessage().contains("has shape [8, 3] but base tensor 'model.layers.0.mlp.up_proj.weight'"
                + " is [6, 3]"), e.getMessage());

        // An embedding whose rows are not config.json's vocab_size is not a vocabulary this code understands.
        Path odd = TestFiles.model(tmp.resolve("odd"), Map.of("vocab_size", OLD + 1), List.of(embed));
        T saved = random("model.embed_tokens.weight", DType.F32, new long[] {NEW, DIM}, 4, 1);
        Path ad2 = TestFiles.adapter(tmp.resolve("ad2"), config(2, 2, "modules_to_save", List.of("embed_tokens")),
                List.of(saved));
        assertTrue(refused(odd, ad2).getMessage().contains("has shape [12, 3] but base tensor"));
    }

    @Test
    void vocabSizeIsSetWhereTheConfigKeepsIt() {
        JsonObject vlm = Json.parseObject(("{\"model_type\": \"llava\", \"text_config\": {\"vocab_size\": 10,"
                + " \"hidden_size\": 3}, \"torch_dtype\": \"bfloat16\"}").getBytes(StandardCharsets.UTF_8));
        JsonObject out = Json.parseObject(ConfigRewriter.rewrite(vlm, DType.BF16, false, 12));
        assertEquals(12, out.getObject("text_config").getLong("vocab_size"));
        assertFalse(out.has("vocab_size"));
        JsonObject flat = Json.parseObject("{\"vocab_size\": 10}".getBytes(StandardCharsets.UTF_8));
        assertEquals(12, Json.parseObject(ConfigRewriter.rewrite(flat, DType.F16, false, 12)).getLong("vocab_size"));
        assertEquals(10, Json.parseObject(ConfigRewriter.rewrite(flat, DType.F16, false, -1)).getLong("vocab_size"));
    }
}

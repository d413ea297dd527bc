package dev.dequant4j.internal.lora;

import static dev.dequant4j.internal.lora.TestFiles.config;
import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.LoraAdapter.Kind;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.lora.TestFiles.T;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Merge semantics the fixtures do not cover, on small hand-built bases and adapters. Expected values are computed
 * here in double precision straight from PEFT's formulas, not by the code under test.
 */
class MergePlanTest {
    /** fp32 merges of values of magnitude ~1 with r <= 4 stay well within this of the exact result. */
    private static final double TOL = 2e-6;

    @TempDir
    Path tmp;

    // ---- semantics ----

    @Test
    void fanInFanOutTransposesTheDeltaForConv1dWeights() {
        // GPT-2 style: Conv1D weights stored [in, out]; lm_head is a Linear [out, in] even with fan_in_fan_out.
        T attn = random("h.0.attn.c_attn.weight", DType.F32, new long[] {6, 10}, 1, 1);
        T proj = random("h.0.mlp.c_proj.weight", DType.F32, new long[] {6, 6}, 2, 1);
        T head = random("lm_head.weight", DType.F32, new long[] {10, 6}, 3, 1);
        T a1 = random("h.0.attn.c_attn.lora_A.weight", DType.F32, new long[] {2, 6}, 4, 1);
        T b1 = random("h.0.attn.c_attn.lora_B.weight", DType.F32, new long[] {10, 2}, 5, 1);
        T a2 = random("h.0.mlp.c_proj.lora_A.weight", DType.F32, new long[] {2, 6}, 6, 1);
        T b2 = random("h.0.mlp.c_proj.lora_B.weight", DType.F32, new long[] {6, 2}, 7, 1);
        T a3 = random("lm_head.lora_A.weight", DType.F32, new long[] {2, 6}, 8, 1);
        T b3 = random("lm_head.lora_B.weight", DType.F32, new long[] {10, 2}, 9, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(attn, proj, head));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 3, "fan_in_fan_out", true),
                List.of(a1, b1, a2, b2, a3, b3));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            double s = 1.5;
            assertClose(lora(attn, a1, b1, s, true), merge(c, plan, attn.name()), attn.name());
            assertClose(lora(proj, a2, b2, s, true), merge(c, plan, proj.name()), proj.name());
            assertClose(lora(head, a3, b3, s, false), merge(c, plan, head.name()), head.name());
        }
    }

    @Test
    void doraOnAConv1dWeightNormalisesColumns() {
        T w = random("h.0.attn.c_attn.weight", DType.F32, new long[] {6, 10}, 1, 1);
        T a = random("h.0.attn.c_attn.lora_A.weight", DType.F32, new long[] {3, 6}, 2, 1);
        T b = random("h.0.attn.c_attn.lora_B.weight", DType.F32, new long[] {10, 3}, 3, 1);
        T m = random("h.0.attn.c_attn.lora_magnitude_vector", DType.F32, new long[] {10}, 4, 2);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(w));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(3, 6, "fan_in_fan_out", true, "use_dora", true),
                List.of(a, b, m));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            double[] wd = lora(w, a, b, 2.0, true);
            assertClose(dora(wd, 6, 10, m, true), merge(c, MergePlan.build(c, List.of(l)), w.name()), w.name());
        }
    }

    @Test
    void embeddingLoraAndEmbeddingDora() {
        T emb = random("model.embed_tokens.weight", DType.BF16, new long[] {12, 5}, 1, 1);
        T ea = random("model.embed_tokens.lora_embedding_A", DType.BF16, new long[] {3, 12}, 2, 1);
        T eb = random("model.embed_tokens.lora_embedding_B", DType.BF16, new long[] {5, 3}, 3, 1);
        T mag = random("model.embed_tokens.lora_magnitude_vector", DType.BF16, new long[] {5}, 4, 2);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(emb));
        Path plain = TestFiles.adapter(tmp.resolve("plain"), config(3, 6), List.of(ea, eb));
        Path withDora = TestFiles.adapter(tmp.resolve("dora"), config(3, 6, "use_dora", true), List.of(ea, eb, mag));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter p = LoraAdapter.open(plain);
             LoraAdapter d = LoraAdapter.open(withDora)) {
            double[] wd = embeddingLora(emb, ea, eb, 2.0);
            assertClose(wd, merge(c, MergePlan.build(c, List.of(p)), emb.name()), "embedding LoRA");
            assertClose(dora(wd, 12, 5, mag, true), merge(c, MergePlan.build(c, List.of(d)), emb.name()),
                    "embedding DoRA");
            assertEquals(Kind.EMBEDDING, MergePlan.build(c, List.of(d)).targets().getFirst().module().kind());
        }
    }

    @Test
    void modulesToSaveAndBiasesReplaceTheBase() {
        T head = random("lm_head.weight", DType.BF16, new long[] {8, 4}, 1, 1);
        T norm = random("model.norm.weight", DType.BF16, new long[] {4}, 2, 1);
        T up = random("model.layers.0.mlp.up_proj.weight", DType.BF16, new long[] {6, 4}, 3, 1);
        T upBias = random("model.layers.0.mlp.up_proj.bias", DType.BF16, new long[] {6}, 4, 1);
        T newHead = random("lm_head.weight", DType.F16, new long[] {8, 4}, 5, 1);
        T newNorm = random("model.norm.weight", DType.F32, new long[] {4}, 6, 1);
        T newBias = random("model.layers.0.mlp.up_proj.base_layer.bias", DType.F32, new long[] {6}, 7, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(head, norm, up, upBias));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "bias", "lora_only",
                "modules_to_save", List.of("lm_head", "norm")), List.of(newHead, newNorm, newBias));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            assertEquals(List.of("lm_head.weight", "model.layers.0.mlp.up_proj.bias", "model.norm.weight"),
                    List.copyOf(plan.tensors()));
            assertArrayEquals(newHead.values(), merge(c, plan, "lm_head.weight"));
            assertArrayEquals(newNorm.values(), merge(c, plan, "model.norm.weight"));
            assertArrayEquals(newBias.values(), merge(c, plan, "model.layers.0.mlp.up_proj.bias"));
            assertInstanceOf(MergeOp.Replace.class, plan.ops("lm_head.weight").getFirst());
        }
    }

    @Test
    void loraBiasAddsTheScaledBias() {
        T w = random("m.fc.weight", DType.F32, new long[] {5, 3}, 1, 1);
        T bias = random("m.fc.bias", DType.F32, new long[] {5}, 2, 1);
        T a = random("m.fc.lora_A.weight", DType.F32, new long[] {2, 3}, 3, 1);
        T b = random("m.fc.lora_B.weight", DType.F32, new long[] {5, 2}, 4, 1);
        T bb = random("m.fc.lora_B.bias", DType.F32, new long[] {5}, 5, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(w, bias));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 5, "lora_bias", true), List.of(a, b, bb));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            double[] want = new double[5];
            for (int i = 0; i < 5; i++) {
                want[i] = bias.values()[i] + 2.5 * bb.values()[i];
            }
            assertClose(want, merge(c, plan, bias.name()), "bias");
            assertClose(lora(w, a, b, 2.5, false), merge(c, plan, w.name()), "weight");
        }
        Path noBias = TestFiles.model(tmp.resolve("nobias"), null, List.of(w));
        try (Checkpoint c = Checkpoint.open(noBias); LoraAdapter l = LoraAdapter.open(ad)) {
            assertPlanFails(c, l, "base_model.model.m.fc.lora_B.bias", "no base tensor 'm.fc.bias'");
        }
    }

    @Test
    void trainableTokensReplaceRows() {
        T emb = random("model.embed_tokens.weight", DType.F32, new long[] {10, 3}, 1, 1);
        T rows = random("model.embed_tokens.token_adapter.trainable_tokens_delta", DType.F32, new long[] {2, 3}, 2, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(emb));
        Path listForm = TestFiles.adapter(tmp.resolve("list"), config(2, 2, "trainable_token_indices",
                List.of(7, 3)), List.of(rows));
        Path dictForm = TestFiles.adapter(tmp.resolve("dict"), config(2, 2, "trainable_token_indices",
                Map.of("embed_tokens", List.of(9, 0))), List.of(rows));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(listForm);
             LoraAdapter d = LoraAdapter.open(dictForm)) {
            float[] want = emb.values().clone();
            System.arraycopy(rows.values(), 0, want, 7 * 3, 3);
            System.arraycopy(rows.values(), 3, want, 3 * 3, 3);
            assertArrayEquals(want, merge(c, MergePlan.build(c, List.of(l)), emb.name()));
            want = emb.values().clone();
            System.arraycopy(rows.values(), 0, want, 9 * 3, 3);
            System.arraycopy(rows.values(), 3, want, 0, 3);
            assertArrayEquals(want, merge(c, MergePlan.build(c, List.of(d)), emb.name()));
        }
        Path outside = TestFiles.adapter(tmp.resolve("outside"), config(2, 2, "trainable_token_indices",
                List.of(3, 10)), List.of(rows));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(outside)) {
            assertPlanFails(c, l, "trainable_tokens_delta", "index 10 is outside");
        }
    }

    @Test
    void twoAdaptersApplyInOrder() {
        T w = random("m.q.weight", DType.F32, new long[] {4, 6}, 1, 1);
        T a1 = random("m.q.lora_A.weight", DType.F32, new long[] {2, 6}, 2, 1);
        T b1 = random("m.q.lora_B.weight", DType.F32, new long[] {4, 2}, 3, 1);
        T a2 = random("m.q.lora_A.weight", DType.BF16, new long[] {1, 6}, 4, 1);
        T b2 = random("m.q.lora_B.weight", DType.BF16, new long[] {4, 1}, 5, 1);
        T m2 = random("m.q.lora_magnitude_vector", DType.BF16, new long[] {4}, 6, 2);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(w));
        Path first = TestFiles.adapter(tmp.resolve("first"), config(2, 4), List.of(a1, b1));
        Path second = TestFiles.adapter(tmp.resolve("second"), config(1, 3, "use_dora", true), List.of(a2, b2, m2));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l1 = LoraAdapter.open(first);
             LoraAdapter l2 = LoraAdapter.open(second)) {
            MergePlan plan = MergePlan.build(c, List.of(l1, l2));
            List<MergeOp> ops = plan.ops(w.name());
            assertEquals("first", ((MergeOp.Lora) ops.get(0)).adapter());
            assertEquals("second", ((MergeOp.Dora) ops.get(1)).adapter());
            double[] w1 = lora(w, a1, b1, 2.0, false);
            T w1t = new T("w1", DType.F32, new long[] {4, 6}, toFloats(w1));
            double[] w2 = dora(lora(w1t, a2, b2, 3.0, false, w1), 4, 6, m2, false);
            assertClose(w2, merge(c, plan, w.name()), "LoRA then DoRA");
            assertEquals(List.of(0, 1), plan.targets().stream().map(MergePlan.Target::adapter).toList());
        }
        Path twin = TestFiles.adapter(tmp.resolve("x").resolve("first"), config(2, 4), List.of(a1, b1));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l1 = LoraAdapter.open(first);
             LoraAdapter l2 = LoraAdapter.open(twin)) {
            List<MergeOp> ops = MergePlan.build(c, List.of(l1, l2)).ops(w.name());
            assertEquals(List.of("first#0", "first#1"), ops.stream().map(o -> ((MergeOp.Lora) o).adapter()).toList());
        }
    }

    @Test
    void tiedLmHeadLoraUntiesTheOutputLayerOrGoesIntoTheSharedTensor() {
        // llama-h64-mixed is saved tied: no lm_head.weight, output layer = model.embed_tokens.weight [128, 64].
        T a = random("lm_head.lora_A.weight", DType.F32, new long[] {2, 64}, 1, 0.1);
        T b = random("lm_head.lora_B.weight", DType.F32, new long[] {128, 2}, 2, 0.1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 4), List.of(a, b));
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed")); LoraAdapter l = LoraAdapter.open(ad)) {
            T emb = new T("e", DType.F32, new long[] {128, 64}, c.readFloats("model.embed_tokens.weight"));
            MergePlan trained = MergePlan.build(c, List.of(l));
            assertEquals(Map.of("lm_head.weight", "model.embed_tokens.weight"), trained.untied());
            assertEquals(List.of("lm_head.weight"), List.copyOf(trained.tensors()));
            assertClose(lora(emb, a, b, 2.0, false),
                    Merging.merge(c, "model.embed_tokens.weight", trained.ops("lm_head.weight"), 3), "untied lm_head");
            MergePlan peft = MergePlan.build(c, List.of(l), TiedEmbeddings.MERGE_AND_UNLOAD);
            assertEquals(Map.of(), peft.untied());
            assertEquals(List.of("model.embed_tokens.weight"), List.copyOf(peft.tensors()));
            assertClose(lora(emb, a, b, 2.0, false), merge(c, peft, "model.embed_tokens.weight"), "folded lm_head");
            assertEquals("lm_head.weight", peft.targets().getFirst().module().tensor());
        }
    }

    @Test
    void tiedLmHeadDeltaComesAfterTheEmbeddingsOwnInTheSharedTensor() {
        T ea = random("model.embed_tokens.lora_embedding_A", DType.F32, new long[] {3, 128}, 1, 0.1);
        T eb = random("model.embed_tokens.lora_embedding_B", DType.F32, new long[] {64, 3}, 2, 0.1);
        T a = random("lm_head.lora_A.weight", DType.F32, new long[] {2, 64}, 3, 0.1);
        T b = random("lm_head.lora_B.weight", DType.F32, new long[] {128, 2}, 4, 0.1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 4, "rank_pattern", Map.of("embed_tokens", 3)),
                List.of(a, b, ea, eb));
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed")); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l), TiedEmbeddings.MERGE_AND_UNLOAD);
            List<MergeOp> ops = plan.ops("model.embed_tokens.weight");
            assertEquals(List.of(3, 2), ops.stream().map(o -> ((MergeOp.Lora) o).r()).toList());
            MergePlan trained = MergePlan.build(c, List.of(l));
            assertEquals(List.of(3), trained.ops("model.embed_tokens.weight").stream()
                    .map(o -> ((MergeOp.Lora) o).r()).toList());
            assertEquals(List.of(2), trained.ops("lm_head.weight").stream().map(o -> ((MergeOp.Lora) o).r()).toList());
            T emb = new T("e", DType.F32, new long[] {128, 64}, c.readFloats("model.embed_tokens.weight"));
            double[] own = embeddingLora(emb, ea, eb, 4.0 / 3);
            T ownT = new T("o", DType.F32, new long[] {128, 64}, toFloats(own));
            assertClose(lora(ownT, a, b, 2.0, false, own), merge(c, plan, "model.embed_tokens.weight"), "both");
            assertEquals(List.of(), l.warnings());
        }
    }

    @Test
    void closedAdapterCannotBePlanned() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            LoraAdapter l = LoraAdapter.open(Fixtures.adapter("h64-lora-r8"));
            l.close();
            l.close();
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> MergePlan.build(c, List.of(l)));
            assertEquals("adapter is closed", e.detail());
        }
    }

    @Test
    void tiedLmHeadReplacementIsUntiedUnlessItEqualsTheEmbeddingReplacement() {
        T emb = random("model.embed_tokens.weight", DType.BF16, new long[] {128, 64}, 1, 1);
        T head = new T("lm_head.weight", DType.BF16, new long[] {128, 64}, emb.values());
        T otherHead = random("lm_head.weight", DType.BF16, new long[] {128, 64}, 2, 1);
        Path same = TestFiles.adapter(tmp.resolve("same"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(emb, head));
        Path different = TestFiles.adapter(tmp.resolve("different"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(emb, otherHead));
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed"));
             LoraAdapter s = LoraAdapter.open(same); LoraAdapter d = LoraAdapter.open(different)) {
            MergePlan plan = MergePlan.build(c, List.of(s));
            assertEquals(List.of("model.embed_tokens.weight"), List.copyOf(plan.tensors()));
            assertArrayEquals(emb.values(), merge(c, plan, "model.embed_tokens.weight"));
            assertEquals(Map.of(), plan.untied());

            MergePlan untied = MergePlan.build(c, List.of(d));
            assertEquals(Map.of("lm_head.weight", "model.embed_tokens.weight"), untied.untied());
            assertEquals(List.of("model.embed_tokens.weight", "lm_head.weight"), List.copyOf(untied.tensors()));
            assertInstanceOf(MergeOp.Replace.class, untied.ops("lm_head.weight").getFirst());
        }
    }

    @Test
    void visionLanguageModelPrefixesAreRemapped() {
        T w = random("language_model.model.layers.0.self_attn.q_proj.weight", DType.F32, new long[] {4, 4}, 1, 1);
        T a = random("model.language_model.layers.0.self_attn.q_proj.lora_A.weight", DType.F32, new long[] {1, 4}, 2, 1);
        T b = random("model.language_model.layers.0.self_attn.q_proj.lora_B.weight", DType.F32, new long[] {4, 1}, 3, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(w));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(1, 1), List.of(a, b));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            assertClose(lora(w, a, b, 1.0, false), merge(c, plan, w.name()), w.name());
        }
    }

    @Test
    void opsMapIsAViewInBaseOrder() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter l = LoraAdapter.open(Fixtures.adapter("h64-dora-qv"))) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            Map<String, List<MergeOp>> ops = plan.ops();
            assertEquals(List.of("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                    "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"),
                    List.copyOf(ops.keySet()));
            ops.forEach((k, v) -> {
                MergeOp.Dora d = (MergeOp.Dora) v.getFirst();
                assertEquals(8, d.r());
                assertEquals(2.0f, d.scale());
            });
            assertEquals(null, ops.get("model.norm.weight"));
            assertEquals(List.of(), plan.ops("model.norm.weight"));
        }
    }

    // ---- mapping errors ----

    @Test
    void adapterForAnotherModelFailsOnShape() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter l = LoraAdapter.open(Fixtures.adapter("h48-lora-r4"))) {
            Dequant4jException e = assertPlanFails(c, l, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
                    "does not fit base tensor 'model.layers.0.mlp.down_proj.weight' [64, 160]");
            assertTrue(e.getMessage().contains("h48-lora-r4/adapter_model.safetensors"), e.getMessage());
            assertTrue(e.detail().contains("make a delta of [48, 354]"), e.getMessage());
        }
    }

    @Test
    void keyWithoutBaseTensorFails() {
        T a = random("model.layers.7.self_attn.q_proj.lora_A.weight", DType.F32, new long[] {2, 64}, 1, 1);
        T b = random("model.layers.7.self_attn.q_proj.lora_B.weight", DType.F32, new long[] {64, 2}, 2, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2), List.of(a, b));
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq")); LoraAdapter l = LoraAdapter.open(ad)) {
            Dequant4jException e = assertPlanFails(c, l, "model.layers.7.self_attn.q_proj.lora_A.weight",
                    "no base tensor 'model.layers.7.self_attn.q_proj.weight'");
            assertTrue(e.detail().contains("the base has model.layers.0.self_attn.q_proj.weight and 1 more"),
                    e.getMessage());
        }
    }

    @Test
    void aSavedResizedEmbeddingChangesTheOutputShape() {
        T emb = random("model.embed_tokens.weight", DType.F32, new long[] {10, 3}, 1, 1);
        T bigger = random("model.embed_tokens.base_layer.weight", DType.F32, new long[] {12, 3}, 2, 1);
        Path base = TestFiles.model(tmp.resolve("base"), null, List.of(emb));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2), List.of(bigger));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad)) {
            MergePlan plan = MergePlan.build(c, List.of(l));
            assertArrayEquals(new long[] {12, 3}, plan.resizedShape(emb.name()));
            assertEquals(12, plan.vocabularySize());
        }
        T a = random("model.embed_tokens.lora_embedding_A", DType.F32, new long[] {2, 12}, 3, 1);
        T b = random("model.embed_tokens.lora_embedding_B", DType.F32, new long[] {3, 2}, 4, 1);
        Path loraOnly = TestFiles.adapter(tmp.resolve("lora"), config(2, 2), List.of(a, b));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(loraOnly)) {
            assertPlanFails(c, l, "lora_embedding_A", "resized vocabulary");
        }
    }

    // ---- base16 ----

    @Test
    void base16MustHaveTheSameNamesAndShapes() {
        Path original = Fixtures.root().resolve("expected/models/llama-h64-bf16/original.safetensors");
        try (Checkpoint q = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Checkpoint b16 = Checkpoint.open(original);
             Checkpoint mixed = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed"));
             Checkpoint h48 = Checkpoint.open(Fixtures.root().resolve("expected/models/llama-h48-fp16/original.safetensors"))) {
            MergePlan.checkBase16(q, b16);
            Dequant4jException extra = assertThrows(Dequant4jException.class, () -> MergePlan.checkBase16(mixed, b16));
            assertTrue(extra.detail().contains("not in the quantized checkpoint 1: lm_head.weight"), extra.getMessage());
            Dequant4jException quantized = assertThrows(Dequant4jException.class, () -> MergePlan.checkBase16(q, q));
            assertTrue(quantized.detail().startsWith("is quantized (NF4)"), quantized.getMessage());
            Dequant4jException other = assertThrows(Dequant4jException.class, () -> MergePlan.checkBase16(q, h48));
            assertTrue(other.detail().contains("missing") || other.detail().contains("has shape"), other.getMessage());
        }
        T w = random("h.0.attn.c_attn.weight", DType.F32, new long[] {6, 10}, 1, 1);
        T wt = random("h.0.attn.c_attn.weight", DType.F32, new long[] {10, 6}, 1, 1);
        try (Checkpoint x = Checkpoint.open(TestFiles.model(tmp.resolve("x"), null, List.of(w)));
             Checkpoint y = Checkpoint.open(TestFiles.model(tmp.resolve("y"), null, List.of(wt)))) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> MergePlan.checkBase16(x, y));
            assertTrue(e.detail().contains("Conv1D"), e.getMessage());
        }
    }

    // ---- helpers: expected values in double, straight from PEFT's formulas ----

    /** {@code W + s * B @ A}, or with {@code transposed} {@code W + s * (B @ A)^T}. */
    static double[] lora(T w, T a, T b, double s, boolean transposed) {
        double[] base = new double[w.values().length];
        for (int i = 0; i < base.length; i++) {
            base[i] = w.values()[i];
        }
        return lora(w, a, b, s, transposed, base);
    }

    private static double[] lora(T w, T a, T b, double s, boolean transposed, double[] base) {
        int rows = (int) w.shape()[0];
        int cols = (int) w.shape()[1];
        int r = (int) a.shape()[0];
        double[] out = base.clone();
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                int o = transposed ? j : i;
                int in = transposed ? i : j;
                double acc = 0;
                for (int k = 0; k < r; k++) {
                    acc += b.at(o, k) * a.at(k, in);
                }
                out[i * cols + j] += s * acc;
            }
        }
        return out;
    }

    /** Embedding: {@code W[v, d] + s * sum_k B[d, k] * A[k, v]}. */
    static double[] embeddingLora(T w, T a, T b, double s) {
        int rows = (int) w.shape()[0];
        int cols = (int) w.shape()[1];
        double[] out = new double[rows * cols];
        for (int v = 0; v < rows; v++) {
            for (int d = 0; d < cols; d++) {
                double acc = 0;
                for (int k = 0; k < a.shape()[0]; k++) {
                    acc += b.at(d, k) * a.at(k, v);
                }
                out[v * cols + d] = w.values()[v * cols + d] + s * acc;
            }
        }
        return out;
    }

    /** DoRA: scale each output unit (row, or column if {@code perColumn}) of {@code wd} to its magnitude. */
    static double[] dora(double[] wd, int rows, int cols, T magnitude, boolean perColumn) {
        double[] out = wd.clone();
        int units = perColumn ? cols : rows;
        for (int u = 0; u < units; u++) {
            double sum = 0;
            int n = perColumn ? rows : cols;
            for (int e = 0; e < n; e++) {
                double v = perColumn ? wd[e * cols + u] : wd[u * cols + e];
                sum += v * v;
            }
            double f = magnitude.values()[u] / Math.sqrt(sum);
            for (int e = 0; e < n; e++) {
                int idx = perColumn ? e * cols + u : u * cols + e;
                out[idx] = f * wd[idx];
            }
        }
        return out;
    }

    private static float[] toFloats(double[] d) {
        float[] f = new float[d.length];
        for (int i = 0; i < d.length; i++) {
            f[i] = (float) d[i];
        }
        return f;
    }

    private static float[] merge(Checkpoint c, MergePlan plan, String tensor) {
        return Merging.merge(c, tensor, plan.ops(tensor), 3);
    }

    private static void assertClose(double[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what);
        double max = 0;
        for (int i = 0; i < want.length; i++) {
            max = Math.max(max, Math.abs(want[i] - got[i]));
        }
        assertTrue(max <= TOL, what + ": max |diff| " + max);
    }

    private static Dequant4jException assertPlanFails(Checkpoint c, LoraAdapter l, String key, String detail) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> MergePlan.build(c, List.of(l)));
        assertTrue(e.tensor().orElse("").contains(key), "tensor of: " + e.getMessage());
        assertTrue(e.detail().contains(detail), e.getMessage());
        return e;
    }
}

package dev.dequant4j.internal.lora;

import static dev.dequant4j.internal.lora.TestFiles.config;
import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.LoraAdapter.Kind;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Opening adapters: config fields, key forms, consistency checks and refusals, independently of any base. */
class LoraAdapterTest {
    @TempDir
    Path tmp;

    @Test
    void fixtureAdapterOpensWithItsConfig() {
        try (LoraAdapter a = LoraAdapter.open(Fixtures.adapter("h64-rslora-r16"))) {
            assertEquals("h64-rslora-r16", a.name());
            assertEquals(16, a.r());
            assertEquals(32.0, a.alpha());
            assertTrue(a.useRslora());
            assertEquals(8.0f, a.scaling());
            assertFalse(a.useDora());
            assertEquals(14, a.modules().size());
            assertEquals("model.layers.0.mlp.down_proj.weight", a.modules().getFirst().tensor());
            assertEquals(List.of("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
                    "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"), a.modules().getFirst().keys());
            assertEquals(7, a.targetModules().size());
        }
    }

    @Test
    void doraFixtureHasMagnitudes() {
        try (LoraAdapter a = LoraAdapter.open(Fixtures.adapter("h64-dora-qv"))) {
            assertTrue(a.useDora());
            for (LoraAdapter.Module m : a.modules()) {
                assertTrue(m.dora(), m.module());
                assertEquals(3, m.keys().size());
                assertTrue(m.keys().get(2).endsWith(".lora_magnitude_vector"));
            }
        }
    }

    @Test
    void rankComesFromTheTensorsAndAMismatchedConfigIsReported() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(4, 8), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1)));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            LoraAdapter.Module m = a.modules().getFirst();
            assertEquals(2, m.r());
            assertEquals(4.0f, m.scaling());
            assertEquals(1, a.warnings().size());
            assertTrue(a.warnings().getFirst().contains("r=4") && a.warnings().getFirst().contains("r=2"),
                    a.warnings().getFirst());
        }
    }

    /** PEFT's save of a resized vocabulary: wrapper copies beside their replacement are skipped, as PEFT does. */
    @Test
    void wrapperCopiesCountOnlyBesideTheirReplacement() {
        List<TestFiles.T> wrapperCopies = List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("lm_head.modules_to_save.weight", DType.F32, new long[] {4, 3}, 3, 1),
                random("lm_head.original_module.weight", DType.F32, new long[] {4, 3}, 4, 1));
        List<TestFiles.T> withReplacement = new java.util.ArrayList<>(wrapperCopies);
        withReplacement.add(random("lm_head.weight", DType.F32, new long[] {4, 3}, 5, 1));
        try (LoraAdapter a = LoraAdapter.open(TestFiles.adapter(tmp.resolve("a"), config(2, 2), withReplacement))) {
            assertEquals(List.of("lm_head.weight", "m.q.weight"),
                    a.modules().stream().map(m -> m.tensor()).sorted().toList());
        }
        Path alone = TestFiles.adapter(tmp.resolve("b"), config(2, 2), wrapperCopies);
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> LoraAdapter.open(alone).close());
        assertTrue(e.getMessage().contains("no replacement 'lm_head.weight'"), e.getMessage());
    }

    @Test
    void scalingIsTheFloatOfTheDoubleQuotient() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(3, 7, "use_rslora", true), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {3, 4}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {4, 3}, 2, 1)));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            assertEquals((float) (7 / Math.sqrt(3)), a.modules().getFirst().scaling());
        }
    }

    @Test
    void keysWithAdapterNamesAndEmbeddingAndTokenForms() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2, "use_dora", true,
                "trainable_token_indices", Map.of("embed_tokens", List.of(1, 4))), List.of(
                random("model.layers.0.q.lora_A.default.weight", DType.BF16, new long[] {2, 3}, 1, 1),
                random("model.layers.0.q.lora_B.default.weight", DType.BF16, new long[] {5, 2}, 2, 1),
                random("model.layers.0.q.lora_magnitude_vector.default.weight", DType.BF16, new long[] {5}, 3, 1),
                random("model.embed_tokens.lora_embedding_A.default", DType.F16, new long[] {2, 9}, 4, 1),
                random("model.embed_tokens.lora_embedding_B.default", DType.F16, new long[] {3, 2}, 5, 1),
                random("model.embed_tokens.lora_magnitude_vector.default", DType.F16, new long[] {3}, 6, 1),
                random("model.embed_tokens.token_adapter.trainable_tokens_delta.default", DType.F32,
                        new long[] {2, 3}, 7, 1)));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            List<LoraAdapter.Module> m = a.modules();
            assertEquals(3, m.size());
            assertEquals(Kind.EMBEDDING, m.get(0).kind());
            assertEquals("model.embed_tokens.weight", m.get(0).tensor());
            assertTrue(m.get(0).dora());
            assertEquals(DType.F16, m.get(0).dtype());
            assertEquals(Kind.TRAINABLE_TOKENS, m.get(1).kind());
            assertEquals(Kind.LINEAR, m.get(2).kind());
            assertEquals(DType.BF16, m.get(2).dtype());
            assertEquals("model.layers.0.q.weight", m.get(2).tensor());
        }
    }

    @Test
    void replacementsAreModulesToSaveOrBiases() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2, "bias", "lora_only", "modules_to_save",
                List.of("lm_head")), List.of(
                random("lm_head.modules_to_save.default.weight", DType.F32, new long[] {4, 3}, 1, 1),
                random("model.norm.weight", DType.F32, new long[] {3}, 2, 1),
                random("model.layers.0.q.base_layer.bias", DType.F32, new long[] {5}, 3, 1),
                random("model.layers.0.q.lora_A.weight", DType.F32, new long[] {2, 3}, 4, 1),
                random("model.layers.0.q.lora_B.weight", DType.F32, new long[] {5, 2}, 5, 1)));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            Map<String, Kind> kinds = new LinkedHashMap<>();
            a.modules().forEach(m -> kinds.put(m.tensor(), m.kind()));
            assertEquals(Map.of("lm_head.weight", Kind.MODULES_TO_SAVE, "model.norm.weight", Kind.MODULES_TO_SAVE,
                    "model.layers.0.q.bias", Kind.BIAS, "model.layers.0.q.weight", Kind.LINEAR), kinds);
        }
    }

    @Test
    void ignoresTrainingOnlyStateOfVeloraAndMonteclora() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2, "velora_config", Map.of("num_groups", 2),
                "monteclora_config", Map.of("num_samples", 2)), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("m.q.lora_velora_embed", DType.F32, new long[] {2}, 3, 1),
                random("m.q.lora_monteclora_sampler.default.std_prior", DType.F32, new long[] {2}, 4, 1)));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            assertEquals(1, a.modules().size());
        }
        Path plain = TestFiles.adapter(tmp.resolve("b"), config(2, 2), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("m.q.lora_velora_embed", DType.F32, new long[] {2}, 3, 1)));
        assertFails(plain, "m.q.lora_velora_embed", "not a LoRA tensor key");
    }

    @Test
    void rankDisagreementBetweenAAndBFails() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(4, 8), List.of(
                random("model.layers.0.q.lora_A.weight", DType.F32, new long[] {4, 3}, 1, 1),
                random("model.layers.0.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1)));
        Dequant4jException e = assertFails(dir, "base_model.model.model.layers.0.q.lora_B.weight", "rank disagrees");
        assertTrue(e.getMessage().contains("r=4") && e.getMessage().contains("r=2"), e.getMessage());
    }

    @Test
    void missingHalfOfAPairFails() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2), List.of(
                random("model.layers.0.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1)));
        assertFails(dir, "lora_A.weight", "has lora_A but no lora_B");
    }

    @Test
    void missingConfigFieldFails() throws IOException {
        Path dir = fixtureWithConfig("h64-lora-r8", c -> c.remove("lora_alpha"));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertEquals("missing field 'lora_alpha'", e.detail());
        assertTrue(e.getMessage().contains("adapter_config.json"), e.getMessage());
    }

    @Test
    void wrongTypedConfigFieldFails() throws IOException {
        Path dir = fixtureWithConfig("h64-lora-r8", c -> c.put("r", new JsonString("8")));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertTrue(e.detail().contains("'r' must be an integer"), e.getMessage());
    }

    @Test
    void doraConfigWithoutMagnitudesFails() throws IOException {
        Path dir = fixtureWithConfig("h64-lora-r8", c -> c.put("use_dora", JsonBoolean.TRUE));
        assertFails(dir, "lora_A.weight", "use_dora is true in adapter_config.json but module");
    }

    @Test
    void magnitudesWithoutDoraConfigFail() throws IOException {
        Path dir = fixtureWithConfig("h64-dora-qv", c -> c.put("use_dora", JsonBoolean.FALSE));
        assertFails(dir, "lora_magnitude_vector", "use_dora is false");
    }

    @Test
    void magnitudeOfTheWrongLengthFails() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2, "use_dora", true), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("m.q.lora_magnitude_vector", DType.F32, new long[] {3}, 3, 1)));
        assertFails(dir, "m.q.lora_magnitude_vector", "expected shape [5]");
    }

    @Test
    void loraBiasNeedsTheConfigFlag() {
        List<TestFiles.T> tensors = List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("m.q.lora_B.bias", DType.F32, new long[] {5}, 3, 1));
        assertFails(TestFiles.adapter(tmp.resolve("a"), config(2, 2), tensors), "m.q.lora_B.bias",
                "lora_bias is false");
        try (LoraAdapter a = LoraAdapter.open(TestFiles.adapter(tmp.resolve("b"), config(2, 2, "lora_bias", true),
                tensors))) {
            assertEquals(Kind.LORA_BIAS, a.modules().get(0).kind());
            assertEquals("m.q.bias", a.modules().get(0).tensor());
            assertEquals(1.0f, a.modules().get(0).scaling());
        }
    }

    @Test
    void trainableTokensMustMatchTheirIndices() {
        List<TestFiles.T> rows = List.of(random("model.embed_tokens.token_adapter.trainable_tokens_delta", DType.F32,
                new long[] {2, 3}, 1, 1));
        assertFails(TestFiles.adapter(tmp.resolve("a"), config(2, 2), rows), "trainable_tokens_delta",
                "trainable_token_indices in adapter_config.json is not set");
        assertFails(TestFiles.adapter(tmp.resolve("b"), config(2, 2, "trainable_token_indices", List.of(1, 2, 3)),
                rows), "trainable_tokens_delta", "expected shape [3, dim]");
        assertFails(TestFiles.adapter(tmp.resolve("c"), config(2, 2, "trainable_token_indices", List.of(5, 5)),
                rows), "trainable_tokens_delta", "index 5 appears twice");
        assertFails(TestFiles.adapter(tmp.resolve("d"), config(2, 2, "trainable_token_indices",
                Map.of("wte", List.of(1, 2))), rows), "trainable_tokens_delta", "names no module");
    }

    @Test
    void severalAdaptersInOneFileFail() {
        Path dir = TestFiles.adapter(tmp.resolve("a"), config(2, 2), List.of(
                random("m.q.lora_A.one.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.q.lora_B.one.weight", DType.F32, new long[] {5, 2}, 2, 1),
                random("m.k.lora_A.two.weight", DType.F32, new long[] {2, 3}, 1, 1),
                random("m.k.lora_B.two.weight", DType.F32, new long[] {5, 2}, 2, 1)));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertTrue(e.detail().contains("several adapters [one, two]"), e.getMessage());
    }

    @Test
    void unknownLoraKeyAndIntegerTensorsFail() {
        assertFails(TestFiles.adapter(tmp.resolve("a"), config(2, 2), List.of(
                random("m.q.lora_C.weight", DType.F32, new long[] {2, 3}, 1, 1))), "m.q.lora_C.weight",
                "not a LoRA tensor key");
        assertFails(TestFiles.adapter(tmp.resolve("b"), config(2, 2), List.of(
                random("m.q.lora_A.weight", DType.F32, new long[] {2, 3, 1, 1}, 1, 1),
                random("m.q.lora_B.weight", DType.F32, new long[] {5, 2, 1, 1}, 2, 1))), "m.q.lora_A.weight",
                "convolutions");
    }

    @Test
    void refusesAdaptersThatCannotBeMergedIntoTheOriginalBase() throws IOException {
        assertRefused(c -> c.put("init_lora_weights", new JsonString("pissa_niter_16")), "path_initial_model");
        assertRefused(c -> c.put("init_lora_weights", new JsonString("olora")), "residual");
        assertRefused(c -> c.put("init_lora_weights", new JsonString("corda")), "residual");
        assertRefused(c -> c.put("init_lora_weights", new JsonString("lora_ga")), "residual");
        assertRefused(c -> c.put("peft_type", new JsonString("LOHA")), "peft_type is \"LOHA\"");
        assertRefused(c -> c.put("alora_invocation_tokens", Json.parse("[1, 2]")), "aLoRA");
        assertRefused(c -> c.put("layer_replication", Json.parse("[[0, 2], [1, 2]]")), "duplicated layers");
        assertRefused(c -> c.put("use_qalora", JsonBoolean.TRUE), "QA-LoRA");
    }

    @Test
    void loftqOpensWithAWarning() throws IOException {
        Path dir = fixtureWithConfig("h64-lora-r8", c -> c.put("init_lora_weights", new JsonString("loftq")));
        try (LoraAdapter a = LoraAdapter.open(dir)) {
            assertTrue(a.warnings().getFirst().contains("LoftQ"), a.warnings().toString());
        }
    }

    @Test
    void missingFilesFail() throws IOException {
        Path empty = Files.createDirectories(tmp.resolve("empty"));
        assertTrue(assertThrows(Dequant4jException.class, () -> LoraAdapter.open(empty)).detail()
                .startsWith("no adapter_config.json"));
        Path bin = Files.createDirectories(tmp.resolve("bin"));
        Files.writeString(bin.resolve("adapter_config.json"), "{}");
        Files.write(bin.resolve("adapter_model.bin"), new byte[] {1});
        assertTrue(assertThrows(Dequant4jException.class, () -> LoraAdapter.open(bin)).detail()
                .contains("adapter_model.bin"));
        assertTrue(assertThrows(Dequant4jException.class, () -> LoraAdapter.open(tmp.resolve("nope"))).detail()
                .contains("no such directory"));
    }

    private void assertRefused(Consumer<Map<String, JsonValue>> edit, String why) throws IOException {
        Path dir = fixtureWithConfig("h64-lora-r8", edit);
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertTrue(e.detail().startsWith("cannot merge this adapter: ") && e.detail().contains(why), e.getMessage());
    }

    private static Dequant4jException assertFails(Path dir, String key, String detail) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> LoraAdapter.open(dir));
        assertTrue(e.tensor().orElse("").contains(key), "tensor of: " + e.getMessage());
        assertTrue(e.detail().contains(detail), e.getMessage());
        return e;
    }

    private int copies;

    /** A copy of a fixture adapter with an edited config. */
    private Path fixtureWithConfig(String name, Consumer<Map<String, JsonValue>> edit) throws IOException {
        return TestFiles.withEditedConfig(Fixtures.adapter(name), tmp.resolve(name + "-" + copies++), edit);
    }
}

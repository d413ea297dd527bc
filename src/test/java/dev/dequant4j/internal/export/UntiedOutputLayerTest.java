package dev.dequant4j.internal.export;

import static dev.dequant4j.internal.lora.TestFiles.config;
import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.lora.TestFiles;
import dev.dequant4j.internal.lora.TestFiles.T;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A base that ties its output layer to the input embedding (Llama 3.2 1B/3B, Qwen2.5 up to 3B, Gemma) and an adapter
 * that trained the output layer separately ({@code modules_to_save = ["lm_head"]}: PEFT's wrapper trains its own
 * copy). The export writes {@code lm_head.weight} as its own tensor and unties the config, so the trained output layer
 * is what transformers loads. Expected values come from the hand-built tensors and PEFT's formulas in double.
 */
class UntiedOutputLayerTest {
    @TempDir
    Path tmp;

    private final T embed = random("model.embed_tokens.weight", DType.F32, new long[] {10, 4}, 1, 1);
    private final T norm = random("model.norm.weight", DType.F32, new long[] {4}, 2, 1);

    private Path base() {
        return TestFiles.model(tmp.resolve("base"), Map.of("vocab_size", 10, "tie_word_embeddings", true,
                "torch_dtype", "float32"), List.of(embed, norm));
    }

    private static float[] read(Path out, String name) {
        try (Checkpoint c = Checkpoint.open(out)) {
            return c.readFloats(name);
        }
    }

    private static boolean tied(Path out) throws Exception {
        return Json.parseObject(Files.readAllBytes(out.resolve("config.json"))).get("tie_word_embeddings")
                == JsonBoolean.TRUE;
    }

    @Test
    void aSeparatelyTrainedOutputLayerIsWrittenAndTheConfigUntied() throws Exception {
        T head = random("lm_head.weight", DType.BF16, new long[] {10, 4}, 3, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save", List.of("lm_head")),
                List.of(head));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base()); LoraAdapter l = LoraAdapter.open(ad)) {
            Export.of(c).adapter(l).to(out);
        }
        assertArrayEquals(head.values(), read(out, "lm_head.weight"));
        assertArrayEquals(embed.values(), read(out, "model.embed_tokens.weight"), "the embedding is not changed");
        assertEquals(false, tied(out));
        try (Checkpoint c = Checkpoint.open(out)) {
            assertEquals(List.of("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"),
                    c.tensors().stream().map(TensorInfo::name).sorted().toList());
        }
        assertTrue(Manifest.verify(out).isEmpty());
    }

    @Test
    void aLaterLoraOnTheOutputLayerChangesTheUntiedCopyOnly() throws Exception {
        T head = random("lm_head.weight", DType.F32, new long[] {10, 4}, 3, 1);
        Path first = TestFiles.adapter(tmp.resolve("first"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(random("model.embed_tokens.weight", DType.F32,
                new long[] {10, 4}, 4, 1), head));
        T a = random("lm_head.lora_A.weight", DType.F32, new long[] {2, 4}, 5, 1);
        T b = random("lm_head.lora_B.weight", DType.F32, new long[] {10, 2}, 6, 1);
        Path second = TestFiles.adapter(tmp.resolve("second"), config(2, 6), List.of(a, b));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base()); LoraAdapter l1 = LoraAdapter.open(first);
             LoraAdapter l2 = LoraAdapter.open(second)) {
            Export.of(c).adapter(l1).adapter(l2).to(out);
        }
        float[] got = read(out, "lm_head.weight");
        for (int o = 0; o < 10; o++) {
            for (int i = 0; i < 4; i++) {
                double acc = 0;
                for (int k = 0; k < 2; k++) {
                    acc += b.at(o, k) * a.at(k, i);
                }
                assertEquals(head.values()[o * 4 + i] + 3.0 * acc, got[o * 4 + i], 2e-6, "lm_head[" + o + "," + i
                        + "]");
            }
        }
        float[] firstEmbed = random("model.embed_tokens.weight", DType.F32, new long[] {10, 4}, 4, 1).values();
        assertArrayEquals(firstEmbed, read(out, "model.embed_tokens.weight"),
                "the LoRA on lm_head no longer folds into the embedding once they are untied");
        assertEquals(false, tied(out));
    }

    @Test
    void anIdenticalCopyStaysTied() throws Exception {
        T e = random("model.embed_tokens.weight", DType.F32, new long[] {10, 4}, 4, 1);
        T head = new T("lm_head.weight", DType.F32, new long[] {10, 4}, e.values());
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(e, head));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base()); LoraAdapter l = LoraAdapter.open(ad)) {
            Export.of(c).adapter(l).to(out);
        }
        assertEquals(true, tied(out));
        try (Checkpoint c = Checkpoint.open(out)) {
            assertEquals(List.of("model.embed_tokens.weight", "model.norm.weight"),
                    c.tensors().stream().map(TensorInfo::name).sorted().toList());
        }
    }

    @Test
    void untiedAndResizedTogether() throws Exception {
        T newEmbed = random("model.embed_tokens.weight", DType.F32, new long[] {12, 4}, 4, 1);
        T newHead = random("lm_head.weight", DType.F32, new long[] {12, 4}, 5, 1);
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(newHead, newEmbed));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(base()); LoraAdapter l = LoraAdapter.open(ad)) {
            Export.of(c).adapter(l).to(out);
        }
        assertArrayEquals(newHead.values(), read(out, "lm_head.weight"));
        assertArrayEquals(newEmbed.values(), read(out, "model.embed_tokens.weight"));
        assertEquals(false, tied(out));
        assertEquals(12, Json.parseObject(Files.readAllBytes(out.resolve("config.json"))).getLong("vocab_size"));

        T shortHead = random("lm_head.weight", DType.F32, new long[] {10, 4}, 5, 1);
        Path bad = TestFiles.adapter(tmp.resolve("bad"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(shortHead, newEmbed));
        try (Checkpoint c = Checkpoint.open(base()); LoraAdapter l = LoraAdapter.open(bad)) {
            var e = org.junit.jupiter.api.Assertions.assertThrows(dev.dequant4j.Dequant4jException.class,
                    () -> Export.of(c).adapter(l).to(tmp.resolve("out2")));
            assertTrue(e.getMessage().contains("but 'lm_head.weight' ends with 10 rows"), e.getMessage());
        }
    }
}

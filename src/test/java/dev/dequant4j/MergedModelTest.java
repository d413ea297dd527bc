package dev.dequant4j;

import static dev.dequant4j.internal.lora.TestFiles.config;
import static dev.dequant4j.internal.lora.TestFiles.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.internal.lora.MergePlan;
import dev.dequant4j.internal.lora.Merging;
import dev.dequant4j.internal.lora.TestFiles;
import dev.dequant4j.internal.lora.TestFiles.T;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Reading merged weights without exporting: the values of the scalar reference merge (itself checked against PEFT
 * in {@link MergeConformanceTest}), and the very bytes an export writes.
 */
class MergedModelTest {
    @TempDir
    Path tmp;

    static List<String> pairs() {
        return Fixtures.mergePairs();
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void sameValuesAsTheReferenceMerge(String pair) {
        String[] p = pair.split("__");
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint(p[0]));
             LoraAdapter lora = LoraAdapter.open(Fixtures.adapter(p[1]));
             MergedModel model = MergedModel.of(base, List.of(lora))) {
            MergePlan plan = MergePlan.build(base, List.of(lora));
            assertEquals(base.tensors().stream().map(TensorInfo::name).toList(), model.tensorNames());
            for (TensorInfo t : base.tensors()) {
                if (!t.dtype().isOutputType()) {
                    continue;
                }
                assertEquals(plan.tensors().contains(t.name()), model.isMerged(t.name()), t.name());
                float[] want = Merging.merge(base, t.name(), plan.ops(t.name()), 5);
                float[] got = model.readFloats(t.name());
                assertEquals(want.length, got.length, t.name());
                for (int i = 0; i < want.length; i++) {
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]),
                            t.name() + "[" + i + "]");
                }
            }
        }
    }

    @Test
    void theBytesAnExportWrites() {
        Path out = tmp.resolve("out");
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter lora = LoraAdapter.open(Fixtures.adapter("h64-dora-qv"))) {
            Export.of(base).adapter(lora).dtype(DType.BF16).to(out);
            try (MergedModel model = MergedModel.of(base, List.of(lora));
                 Checkpoint written = Checkpoint.open(out);
                 Arena arena = Arena.ofConfined()) {
                for (TensorInfo t : written.tensors()) {
                    MemorySegment seg = arena.allocate(t.numel() * 2);
                    model.read(t.name(), DType.BF16, seg);
                    MemorySegment want = written.rawData(t.name());
                    for (long i = 0; i < t.numel(); i++) {
                        assertEquals(want.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(
                                java.nio.ByteOrder.LITTLE_ENDIAN), i), seg.getAtIndex(
                                ValueLayout.JAVA_SHORT_UNALIGNED, i), t.name() + "[" + i + "]");
                    }
                }
            }
        }
    }

    @Test
    void anUntiedAndResizedOutputLayer() {
        T embed = random("model.embed_tokens.weight", DType.F32, new long[] {10, 4}, 1, 1);
        T newEmbed = random("model.embed_tokens.weight", DType.F32, new long[] {12, 4}, 2, 1);
        T newHead = random("lm_head.weight", DType.F32, new long[] {12, 4}, 3, 1);
        Path base = TestFiles.model(tmp.resolve("base"), Map.of("vocab_size", 10, "tie_word_embeddings", true),
                List.of(embed));
        Path ad = TestFiles.adapter(tmp.resolve("ad"), config(2, 2, "modules_to_save",
                List.of("embed_tokens", "lm_head")), List.of(newEmbed, newHead));
        try (Checkpoint c = Checkpoint.open(base); LoraAdapter l = LoraAdapter.open(ad);
             MergedModel model = MergedModel.of(c, List.of(l))) {
            assertEquals(List.of("model.embed_tokens.weight", "lm_head.weight"), model.tensorNames());
            assertArrayEquals(new long[] {12, 4}, model.shape("lm_head.weight"));
            assertArrayEquals(newHead.values(), model.readFloats("lm_head.weight"));
            assertArrayEquals(newEmbed.values(), model.readFloats("model.embed_tokens.weight"));
            assertTrue(model.isMerged("lm_head.weight"));
        }
    }

    @Test
    void mismatchesFailWhenCreatedAndAClosedModelRefusesReads() {
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter other = LoraAdapter.open(Fixtures.adapter("h48-lora-r4"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> MergedModel.of(base, List.of(other)));
            assertTrue(e.getMessage().contains("does not fit base tensor"), e.getMessage());
            assertEquals(Dequant4jException.Kind.ADAPTER_MISMATCH, e.kind());
        }
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter lora = LoraAdapter.open(Fixtures.adapter("h64-lora-r8"))) {
            MergedModel model = MergedModel.of(base, List.of(lora));
            String name = "model.layers.0.self_attn.q_proj.weight";
            assertEquals(64 * 64, model.readFloats(name).length);
            model.close();
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> model.readFloats(name));
            assertTrue(e.getMessage().endsWith("merged model is closed"), e.getMessage());
            assertEquals(Dequant4jException.Kind.INVALID_REQUEST, e.kind());
            assertFalse(base.readFloats(name).length == 0, "the base stays open");
        }
    }
}

package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.TensorStats;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.export.Manifest;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A tiny GPT-2 saved by transformers 5.17 with bitsandbytes 0.50 (NF4 + double quant, FP4, LLM.int8) and PEFT 0.21
 * adapters on it (fixtures/real, see its README): the Conv1D weights come out {@code [in, out]}, bit-exact against
 * bitsandbytes' dequantization, merged within the documented 1e-6 of PEFT's fp32 {@code merge_and_unload}, and with the
 * key set, shapes and dtypes of the 16-bit original.
 */
class RealGpt2ExportTest {
    static final List<String> QUANTS = List.of("nf4-dq", "fp4", "int8");
    static final List<String> ADAPTERS = List.of("lora", "dora", "wte");

    @TempDir
    Path tmp;

    static Path real(String name) {
        return Fixtures.root().resolve("real").resolve(name);
    }

    static Path expected(String file) {
        return real("gpt2-expected").resolve(file);
    }

    static Stream<Arguments> pairs() {
        return QUANTS.stream().flatMap(q -> ADAPTERS.stream().map(a -> Arguments.of(q, a)));
    }

    @ParameterizedTest
    @ValueSource(strings = {"nf4-dq", "fp4", "int8"})
    void dequantIsBitExactAndKeysMatchTheOriginal(String quant) {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(real("gpt2-" + quant))) {
            Export.of(c).dtype(DType.F32).to(out);
        }
        assertBitExact(expected("dequant-gpt2-" + quant + ".safetensors"), out);
        assertSameLayoutAsOriginal(out, DType.F32);
        assertEquals(List.of(), Manifest.verify(out));
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void mergeMatchesPeftAndKeysMatchTheOriginal(String quant, String adapter) {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(real("gpt2-" + quant));
             LoraAdapter a = LoraAdapter.open(real("gpt2-adapter-" + adapter))) {
            // the expected values are PEFT's merge_and_unload, which keeps the tied wte/lm_head pair tied (the
            // default export unties it after a wte LoRA, as trained: TiedEmbeddingMergeTest)
            ExportResult r = Export.of(c).adapter(a).dtype(DType.F32)
                    .tiedEmbeddings(TiedEmbeddings.MERGE_AND_UNLOAD).to(out);
            long merged = r.stats().stream().filter(s -> s.mergeSteps() > 0).count();
            assertTrue(merged > 0);
            for (TensorStats s : r.stats()) {
                if (s.mergeSteps() > 0) {
                    assertTrue(s.relDeltaNorm() > 1e-3, s.name() + " barely changed: " + s.relDeltaNorm());
                }
            }
        }
        Path want = expected("merged-gpt2-" + quant + "__gpt2-adapter-" + adapter + ".safetensors");
        double maxDiff = 0;
        long differ = 0;
        long total = 0;
        try (Checkpoint e = Checkpoint.open(want); Checkpoint g = Checkpoint.open(out)) {
            assertTrue(e.tensors().size() >= 2);
            for (TensorInfo t : e.tensors()) {
                assertArrayEquals(t.shape(), g.tensor(t.name()).shape(), t.name());
                float[] w = e.readFloats(t.name());
                float[] v = g.readFloats(t.name());
                for (int i = 0; i < w.length; i++) {
                    double d = Math.abs((double) w[i] - v[i]);
                    maxDiff = Math.max(maxDiff, d);
                    differ += d > 0 ? 1 : 0;
                }
                total += w.length;
            }
        }
        System.out.printf("gpt2-%s x %s: F32 elements differing %d / %d, max |diff| %.3g%n", quant, adapter, differ,
                total, maxDiff);
        assertTrue(maxDiff <= 1e-6, quant + " x " + adapter + ": max diff " + maxDiff);
        assertSameLayoutAsOriginal(out, DType.F32);
    }

    @ParameterizedTest
    @ValueSource(strings = {"nf4-dq", "fp4", "int8"})
    void defaultDtypeExportHasTheOriginalsDtypes(String quant) {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(real("gpt2-" + quant));
             LoraAdapter a = LoraAdapter.open(real("gpt2-adapter-lora"))) {
            Export.of(c).adapter(a).to(out);
        }
        assertSameLayoutAsOriginal(out, null);
    }

    /**
     * Saved after a forward pass on the CPU, the FP4 checkpoint has every absmax BF16 {@code [in/64, out]}: read
     * transposed back (with a warning), it is bitsandbytes' dequant with the scales in block order; read as stored,
     * {@code mlp.c_proj} (four blocks per row) would be scrambled.
     */
    @org.junit.jupiter.api.Test
    void fp4SavedAfterACpuForwardIsRepairedWithAWarning() {
        Path out = tmp.resolve("out");
        List<String> warnings = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.logging.Logger log = java.util.logging.Logger.getLogger("dev.dequant4j");
        java.util.logging.Handler h = new java.util.logging.Handler() {
            @Override
            public void publish(java.util.logging.LogRecord r) {
                warnings.add(r.getMessage());
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        log.addHandler(h);
        try (Checkpoint c = Checkpoint.open(real("gpt2-fp4-forward"))) {
            Export.of(c).dtype(DType.F32).to(out);
        } finally {
            log.removeHandler(h);
        }
        assertBitExact(expected("dequant-gpt2-fp4-forward.safetensors"), out);
        assertSameLayoutAsOriginal(out, DType.F32);
        String w = "transformer.h.0.mlp.c_proj.weight: absmax is stored BF16 [4, 64], the layout bitsandbytes' CPU"
                + " kernel repacks to during a forward pass";
        assertTrue(warnings.stream().anyMatch(m -> m.startsWith(w)), warnings.toString());
    }

    /** NF4 + double quant saved after a CPU forward: the scales were re-quantized from BF16, which is refused. */
    @org.junit.jupiter.api.Test
    void nf4DoubleQuantSavedAfterACpuForwardIsRefused() {
        dev.dequant4j.Dequant4jException e = org.junit.jupiter.api.Assertions.assertThrows(
                dev.dequant4j.Dequant4jException.class, () -> {
                    try (Checkpoint c = Checkpoint.open(real("gpt2-nf4-dq-forward"))) {
                        Export.of(c).dtype(DType.F32).to(tmp.resolve("out"));
                    }
                });
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        assertTrue(e.getMessage().contains("nested_dtype 'bfloat16' is not float32 (bitsandbytes writes this when the"
                + " model is saved after a forward pass on the CPU"), e.getMessage());
        assertTrue(e.getMessage().contains("gpt2-nf4-dq-forward"), e.getMessage());
        assertTrue(java.nio.file.Files.notExists(tmp.resolve("out")));
    }

    /** Every tensor of {@code want} has the same bits in {@code out}. */
    static void assertBitExact(Path want, Path out) {
        try (Checkpoint e = Checkpoint.open(want); Checkpoint g = Checkpoint.open(out)) {
            assertTrue(e.tensors().size() >= 4);
            for (TensorInfo t : e.tensors()) {
                assertArrayEquals(t.shape(), g.tensor(t.name()).shape(), t.name());
                float[] w = e.readFloats(t.name());
                float[] v = g.readFloats(t.name());
                long differ = 0;
                for (int i = 0; i < w.length; i++) {
                    differ += Float.floatToRawIntBits(w[i]) != Float.floatToRawIntBits(v[i]) ? 1 : 0;
                }
                assertEquals(0, differ, t.name() + ": elements with other bits than bitsandbytes' dequant");
            }
        }
    }

    /**
     * {@code out} has exactly the 16-bit original's tensor names and shapes (so transformers loads both the same way),
     * in {@code dtype}, or with {@code dtype} null in the original's dtypes.
     */
    static void assertSameLayoutAsOriginal(Path out, DType dtype) {
        try (Checkpoint o = Checkpoint.open(real("gpt2-bf16")); Checkpoint g = Checkpoint.open(out)) {
            assertEquals(layout(o, dtype), layout(g, null));
        }
    }

    private static Map<String, String> layout(Checkpoint c, DType dtype) {
        Map<String, String> m = new TreeMap<>();
        for (TensorInfo t : c.tensors()) {
            m.put(t.name(), java.util.Arrays.toString(t.shape()) + " " + (dtype != null ? dtype : t.dtype()));
        }
        return m;
    }
}

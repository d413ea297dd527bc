package dev.dequant4j.internal.cuda;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Fixtures;
import dev.dequant4j.SyntheticCheckpoint;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Fused dequantize + merge on the GPU against MergeRunner with the scalar kernels: bit for bit by default (DoRA
 * within one ulp), and within {@link Oracle#assertFusedWithin}'s bound with the opt-in fused multiply-adds.
 */
@Tag("gpu")
@ExtendWith(GpuCondition.class)
class CudaMergeGpuTest {
    private static final DType[] OUTS = {DType.F32, DType.F16, DType.BF16};

    private static CudaBackend fused;
    private static CudaBackend exact;
    /** Exact, with chunks of a few rows: DoRA sweeps and row offsets cross chunk boundaries. */
    private static CudaBackend chunked;

    @TempDir
    static Path tmp;

    @BeforeAll
    static void open() {
        if (!Gpu.AVAILABILITY.usable()) {
            return;
        }
        fused = CudaBackend.open(new CudaEngine.Options(1L << 24, true));
        exact = CudaBackend.open(new CudaEngine.Options(1L << 24, false));
        chunked = CudaBackend.open(new CudaEngine.Options(5000, false));
    }

    @AfterAll
    static void close() {
        for (CudaBackend b : new CudaBackend[] {fused, exact, chunked}) {
            if (b != null) {
                b.close();
            }
        }
    }

    /**
     * Runs every backend on one tensor: the default (exact) ones must match the oracle's bits; DoRA norms are
     * summed in another order than the oracle's, which may move a factor by an fp32 ulp: one ulp there. The fused
     * one is held to its stated bound on single LoRA steps (the bound covers those) and to the oracle's bits with
     * F32 output, which it merges exactly.
     */
    private static void compare(LogicalTensor t, List<MergeOp> ops, Arena arena) {
        int dora = ops.stream().anyMatch(op -> op instanceof MergeOp.Dora) ? 1 : 0;
        MemorySegment exact32 = Oracle.expected(t, ops, DType.F32, arena);
        for (DType out : OUTS) {
            MemorySegment want = Oracle.expected(t, ops, out, arena);
            MemorySegment got = arena.allocate(want.byteSize(), 16);
            String what = t.name() + " " + ops + " -> " + out;
            exact.materialize(t, ops, out, got);
            Oracle.assertWithin(what + " (exact)", want, got, out, dora);
            chunked.materialize(t, ops, out, got);
            Oracle.assertWithin(what + " (exact, chunked)", want, got, out, dora);
            if (out == DType.F32) {
                fused.materialize(t, ops, out, got);
                Oracle.assertWithin(what + " (fused opt-in, F32 merges exactly)", want, got, out, dora);
            } else if (ops.size() == 1 && ops.getFirst() instanceof MergeOp.Lora l) {
                fused.materialize(t, ops, out, got);
                Oracle.assertFusedWithin(what + " (fused)", l, t.shape(), exact32, want, got, out);
            }
        }
    }

    static List<String> mergePairs() {
        return Fixtures.mergePairs();
    }

    @ParameterizedTest
    @MethodSource("mergePairs")
    void fixtureAdapters(String pair) {
        String[] parts = pair.split("__");
        Map<String, MergeOp> steps = Gpu.adapterSteps(parts[1]);
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(parts[0])); Arena arena = Arena.ofConfined()) {
            for (Map.Entry<String, MergeOp> e : steps.entrySet()) {
                compare(Gpu.tensors(c).get(e.getKey()), List.of(e.getValue()), arena);
            }
        }
    }

    private static MergeOp.Lora lora(SyntheticCheckpoint s, String name, long rows, long cols, int r) {
        return new MergeOp.Lora(name, s.gaussian((int) rows * r, 0.01), s.gaussian(r * (int) cols, 0.1), r,
                (float) (16.0 / r));
    }

    private static MergeOp.Dora dora(SyntheticCheckpoint s, String name, long rows, long cols, int r,
                                     boolean perColumn) {
        float[] magnitude = s.gaussian((int) (perColumn ? cols : rows), 0.2);
        for (int i = 0; i < magnitude.length; i++) {
            magnitude[i] = Math.abs(magnitude[i]) + 0.1f;
        }
        return new MergeOp.Dora(name, s.gaussian((int) rows * r, 0.01), s.gaussian(r * (int) cols, 0.1), r, 2f,
                magnitude, perColumn);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 7, 16, 33, 64, 128})
    void loraOfEveryRankOnAlignedAndUnalignedRows(int r) throws IOException {
        SyntheticCheckpoint s = new SyntheticCheckpoint(100 + r);
        s.fourBit("aligned", new long[] {96, 520}, "nf4", 64, true, DType.BF16, DType.F32)
                .fourBit("odd", new long[] {45, 77}, "fp4", 32, false, DType.F16, DType.BF16);
        Path file = s.write(tmp.resolve("lora-" + r + ".safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            compare(Gpu.tensors(c).get("aligned.weight"), List.of(lora(s, "a", 96, 520, r)), arena);
            compare(Gpu.tensors(c).get("odd.weight"), List.of(lora(s, "b", 45, 77, r)), arena);
        }
    }

    @Test
    void everyStepKindAndSeveralAdaptersInOnePass() throws IOException {
        SyntheticCheckpoint s = new SyntheticCheckpoint(5);
        long rows = 130;
        long cols = 264;
        s.fourBit("w", new long[] {rows, cols}, "nf4", 64, true, DType.BF16, DType.F32)
                .int8("q", rows, cols)
                .plain("p", new long[] {rows, cols}, DType.BF16)
                .plain("bias", new long[] {rows}, DType.F16);
        Path file = s.write(tmp.resolve("steps.safetensors"));
        Random rnd = s.random();
        // Row 5 twice (the later wins) and a row past the end (ignored), as MergeRunner does.
        MergeOp.ReplaceRows replaceRows = new MergeOp.ReplaceRows("t", new long[] {5, 129, 5, 400},
                s.gaussian(4 * (int) cols, 0.05));
        float[] full = s.gaussian((int) (rows * cols), 0.05);
        MergeOp.Replace replace = new MergeOp.Replace("m", new FloatValues(full));
        List<List<MergeOp>> programs = List.of(
                List.of(lora(s, "a", rows, cols, 8), lora(s, "b", rows, cols, 16), lora(s, "c", rows, cols, 4)),
                List.of(dora(s, "d", rows, cols, 8, false)),
                List.of(dora(s, "e", rows, cols, 8, true)),
                List.of(lora(s, "a", rows, cols, 8), dora(s, "e", rows, cols, 4, true), dora(s, "d", rows, cols, 8,
                        false), lora(s, "f", rows, cols, 3)),
                List.of(dora(s, "d", rows, cols, 8, false), dora(s, "e", rows, cols, 4, true)),
                List.of(replaceRows, lora(s, "a", rows, cols, 8)),
                List.of(lora(s, "a", rows, cols, 8), replace, lora(s, "b", rows, cols, 2)));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            for (String name : List.of("w.weight", "q.weight", "p")) {
                for (List<MergeOp> program : programs) {
                    compare(Gpu.tensors(c).get(name), program, arena);
                }
            }
            float[] values = s.gaussian((int) rows, 0.1);
            compare(Gpu.tensors(c).get("bias"), List.of(new MergeOp.AddScaled("lora_bias", values,
                    1f + rnd.nextFloat())), arena);
        }
    }

    /**
     * Non-finite values in the base and in the adapter: NaN and infinity where the CPU has them, the CPU's bits
     * everywhere else, BF16 bit for bit (its only NaN is 0x7FC0).
     */
    @Test
    void nonFiniteValuesInMerges() throws IOException {
        SyntheticCheckpoint s = new SyntheticCheckpoint(17);
        s.fourBit("w", new long[] {64, 96}, "nf4", 64, false, DType.BF16, DType.F32)
                .setF32Bits("w.weight.absmax", 0, 0x7F800000)
                .setF32Bits("w.weight.absmax", 5, 0x7F812345);
        Path file = s.write(tmp.resolve("non-finite-merge.safetensors"));
        MergeOp.Lora l = lora(s, "a", 64, 96, 8);
        l.left()[3 * 8 + 2] = Float.intBitsToFloat(0x7FC0BEEF);
        l.left()[9 * 8] = Float.POSITIVE_INFINITY;
        l.right()[4 * 96 + 7] = Float.NEGATIVE_INFINITY;
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("w.weight");
            for (DType out : OUTS) {
                MemorySegment got = arena.allocate(out.byteSize(t.numel()), 16);
                MemorySegment want = Oracle.expected(t, List.of(l), out, arena);
                exact.materialize(t, List.of(l), out, got);
                if (out == DType.BF16) {
                    Oracle.assertBitsEqual("non-finite merge -> " + out, want, got, out);
                } else {
                    Oracle.assertBitsEqualAnyNaN("non-finite merge -> " + out, want, got, out);
                }
            }
        }
    }

    /** Many tiles at the highest rank; on the emulation 9 x 5 tiles (the last column tile partial), not 64 x 16. */
    @Test
    void largeTensorAtHighRank() throws IOException {
        long rows = Gpu.EMULATED ? 288 : 2048;
        long cols = Gpu.EMULATED ? 1032 : 4096;
        SyntheticCheckpoint s = new SyntheticCheckpoint(9);
        s.fourBit("w", new long[] {rows, cols}, "nf4", 64, true, DType.BF16, DType.F32);
        Path file = s.write(tmp.resolve("large-merge.safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            compare(Gpu.tensors(c).get("w.weight"), List.of(lora(s, "a", rows, cols, 128)), arena);
        }
    }

    /** A replacement's values, served from an array. */
    record FloatValues(float[] v) implements MergeOp.ValuesSource {
        @Override
        public long numel() {
            return v.length;
        }

        @Override
        public void readF32(long start, float[] dst, int dstOff, int count) {
            System.arraycopy(v, (int) start, dst, dstOff, count);
        }
    }
}

package dev.dequant4j.internal.export;

import dev.dequant4j.DType;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.lora.MergeRunner;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * Produces the output bytes of one unit on the CPU: read (dequantize) float32 values in cache-sized sub-chunks,
 * apply the merge steps, check for non-finite values, round once to the output dtype, and store into the unit's
 * buffer. One instance per worker thread (it owns scratch arrays).
 */
final class CpuMaterializer {
    /** Elements per sub-chunk: 256 KiB of float32, so a sub-chunk and its base copy stay in L2. */
    static final int SUB = 1 << 16;
    /** Fewest rows per merge call. */
    static final int MERGE_ROWS = 32;

    private static final ValueLayout.OfShort SHORT_LE =
            ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong LONG_LE =
            ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt INT_LE =
            ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat FLOAT_LE =
            ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final CpuKernels kernels;
    private float[] f32 = new float[SUB];
    private float[] base = new float[SUB];
    private short[] half = new short[SUB];
    private final double[] acc = new double[3];

    CpuMaterializer(CpuKernels kernels) {
        this.kernels = kernels;
    }

    void produce(ExportPlan.OutputTensor t, ExportPlan.Unit u, MergeRunner runner, TensorTally tally,
                 MemorySegment buf) {
        if (t.raw()) {
            ((PlainTensor) t.source()).ref().copyTo(u.start(), buf, 0, u.count());
            return;
        }
        if (runner == null && t.source() instanceof PlainTensor p && p.dtype() == t.dtype()) {
            // Same dtype in and out, nothing to merge: the exact bytes, checked for non-finite values chunk by
            // chunk while the chunk is still in cache.
            long size = t.dtype().bits() / 8;
            long step = SUB * 4L / size;
            for (long e = 0; e < u.count(); e += step) {
                long n = Math.min(step, u.count() - e);
                p.ref().copyTo((u.start() + e) * size, buf, e * size, n * size);
                countNonFinite(t, u.start() + e, buf.asSlice(e * size, n * size), n, tally);
            }
            return;
        }
        if (t.transpose()) {
            produceTransposed(t, runner, tally, buf);
            return;
        }
        boolean merging = runner != null;
        long cols = Math.max(1, t.cols());
        int step = merging ? mergeStep(cols) : SUB;
        ensure(step);
        long end = u.start() + u.count();
        for (long s = u.start(); s < end; s += step) {
            int c = (int) Math.min(step, end - s);
            t.readBase(s, f32, 0, c);
            if (merging) {
                System.arraycopy(f32, 0, base, 0, c);
                runner.apply(s / cols, (int) (c / cols), f32, 0);
            }
            finish(t, s, c, f32, merging ? base : null, half, tally, buf, s - u.start());
        }
    }

    /**
     * A bnb-quantized Conv1D weight (GPT-2): bitsandbytes quantized it as [out, in], adapters were trained on that
     * layout, the original model stores [in, out]. Merge in the source layout, then transpose.
     */
    private void produceTransposed(ExportPlan.OutputTensor t, MergeRunner runner, TensorTally tally,
                                   MemorySegment buf) {
        long n = t.numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException(t.name() + " is too large to transpose in memory");
        }
        long[] src = t.source().shape();
        int outF = (int) src[0];
        int inF = (int) src[1];
        float[] a = new float[(int) n];
        t.source().readF32(0, a, 0, (int) n);
        float[] before = null;
        if (runner != null) {
            before = a.clone();
            runner.apply(0, outF, a, 0);
        }
        float[] tr = new float[(int) n];
        float[] trBefore = before == null ? null : new float[(int) n];
        for (int o = 0; o < outF; o++) {
            for (int i = 0; i < inF; i++) {
                tr[i * outF + o] = a[o * inF + i];
                if (trBefore != null) {
                    trBefore[i * outF + o] = before[o * inF + i];
                }
            }
        }
        finish(t, 0, (int) n, tr, trBefore, new short[t.dtype() == DType.F32 ? 0 : (int) n], tally, buf, 0);
    }

    /**
     * Elements per merge call for rows of {@code cols}: whole rows, at least MERGE_ROWS of them so the kernels
     * amortise their per-call setup, but never more than one array holds (the exporter refuses rows longer than
     * {@code Integer.MAX_VALUE / 2}, so one row always fits). Computed in long: {@code MERGE_ROWS * cols} would wrap
     * around for rows of 2^26 elements and more, to a step of 0 or less and a loop that never ends.
     */
    static int mergeStep(long cols) {
        long rows = Math.max(1, Math.min(Math.max(MERGE_ROWS, SUB / cols), (Integer.MAX_VALUE - 8) / cols));
        return (int) (rows * cols);
    }

    private void ensure(int n) {
        if (f32.length < n) {
            f32 = new float[n];
            base = new float[n];
            half = new short[n];
        }
    }

    /**
     * Rounds, checks, tallies and stores elements {@code [s, s + c)} held in {@code f32[0..c)} at buffer element
     * {@code at}; {@code base} holds the values before merging, or is null for an unmerged tensor. A value is
     * non-finite when its rounded output is NaN or infinite, which also catches finite float32 values beyond the
     * output dtype's range.
     */
    private void finish(ExportPlan.OutputTensor t, long s, int c, float[] f32, float[] base, short[] half,
                        TensorTally tally, MemorySegment buf, long at) {
        long nonFinite;
        long first = -1;
        switch (t.dtype()) {
            case F32 -> {
                nonFinite = countExponentAllOnes(f32, c);
                if (nonFinite > 0) {
                    first = s + firstNonFinite(f32, c);
                }
                MemorySegment.copy(f32, 0, buf, FLOAT_LE, at * 4, c);
            }
            case F16, BF16 -> {
                int mask = t.dtype() == DType.F16 ? 0x7C00 : 0x7F80;
                if (t.dtype() == DType.F16) {
                    kernels.f32ToF16(f32, 0, half, 0, c);
                } else {
                    kernels.f32ToBf16(f32, 0, half, 0, c);
                }
                nonFinite = kernels.countExponentAllOnes(half, 0, c, (short) mask);
                if (nonFinite > 0) {
                    first = s + firstExponentAllOnes(half, c, mask);
                }
                MemorySegment.copy(half, 0, buf, SHORT_LE, at * 2, c);
            }
            default -> throw new IllegalStateException("output dtype " + t.dtype());
        }
        tally.addNonFinite(nonFinite, first);
        if (base != null) {
            Arrays.fill(acc, 0);
            kernels.deltaStats(base, f32, c, acc);
            tally.addDelta(s, acc);
        }
    }

    /**
     * Counts the NaN/infinite values of {@code count} elements copied as is (same dtype in and out), four 16-bit or
     * two 32-bit lanes per 64-bit word: a lane is non-finite when its exponent bits are all ones.
     */
    static void countNonFinite(ExportPlan.OutputTensor t, long start, MemorySegment chunk, long count,
                                       TensorTally tally) {
        boolean wide = t.dtype() == DType.F32;
        long lane = wide ? 0x7F8000007F800000L : t.dtype() == DType.F16 ? 0x7C007C007C007C00L : 0x7F807F807F807F80L;
        long low = wide ? 0x7FFFFFFF7FFFFFFFL : 0x7FFF7FFF7FFF7FFFL;
        long perWord = wide ? 2 : 4;
        long words = count / perWord;
        long nonFinite = 0;
        for (long i = 0; i < words; i++) {
            long v = (chunk.getAtIndex(LONG_LE, i) & lane) ^ lane;
            // The top bit of each lane of ((v & low) + low) | v is set iff that lane of v is non-zero; no carry
            // crosses lanes because every lane of v is below its top bit.
            long nonZero = ((v & low) + low) | v;
            nonFinite += Long.bitCount(~nonZero & ~low);
        }
        long first = -1;
        for (long i = words * perWord; i < count; i++) {
            if (isNonFinite(t.dtype(), chunk, i)) {
                nonFinite++;
            }
        }
        if (nonFinite > 0) {
            for (long i = 0; i < count && first < 0; i++) {
                if (isNonFinite(t.dtype(), chunk, i)) {
                    first = start + i;
                }
            }
        }
        tally.addNonFinite(nonFinite, first);
    }

    private static boolean isNonFinite(DType dtype, MemorySegment chunk, long i) {
        return switch (dtype) {
            case F32 -> (chunk.getAtIndex(INT_LE, i) & 0x7F800000) == 0x7F800000;
            case F16 -> (chunk.getAtIndex(SHORT_LE, i) & 0x7C00) == 0x7C00;
            default -> (chunk.getAtIndex(SHORT_LE, i) & 0x7F80) == 0x7F80;
        };
    }

    private static int firstExponentAllOnes(short[] h, int c, int mask) {
        for (int i = 0; i < c; i++) {
            if ((h[i] & mask) == mask) {
                return i;
            }
        }
        return -1;
    }

    private static long countExponentAllOnes(float[] f, int c) {
        int n = 0;
        for (int i = 0; i < c; i++) {
            n += (Float.floatToRawIntBits(f[i]) & 0x7F800000) == 0x7F800000 ? 1 : 0;
        }
        return n;
    }

    private static int firstNonFinite(float[] f, int c) {
        for (int i = 0; i < c; i++) {
            if (!Float.isFinite(f[i])) {
                return i;
            }
        }
        return -1;
    }
}

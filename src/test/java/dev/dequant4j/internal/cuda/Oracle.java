package dev.dequant4j.internal.cuda;

import dev.dequant4j.DType;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.cpu.ScalarKernels;
import dev.dequant4j.internal.lora.MergeOp;
import dev.dequant4j.internal.lora.MergeRunner;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;

/**
 * The CPU reference the GPU tests compare against: the tensor's float32 values, {@link MergeRunner} with the
 * {@link ScalarKernels}, one rounding. (readF32 of the tensor uses the selected CPU kernels, which are held to the
 * scalar ones' bits by their own tests; the GPU check script forces the scalar ones with -Ddequant4j.cpu=scalar.)
 */
final class Oracle {
    private Oracle() {}

    static MemorySegment expected(LogicalTensor t, List<MergeOp> ops, DType out, Arena arena) {
        int n = Math.toIntExact(t.numel());
        long[] shape = t.shape();
        long rows = shape.length == 0 ? 1 : shape[0];
        int cols = rows == 0 ? 0 : (int) (n / rows);
        float[] w = new float[n];
        t.readF32(0, w, 0, n);
        if (!ops.isEmpty()) {
            MergeRunner runner = new MergeRunner(ops, rows, cols, ScalarKernels.INSTANCE);
            if (runner.needsPrepass()) {
                runner.prepass((r0, k, buf) -> t.readF32(r0 * cols, buf, 0, k * cols), 7);
            }
            runner.apply(0, (int) rows, w, 0);
        }
        MemorySegment seg = arena.allocate(out.byteSize(n), 16);
        switch (out) {
            case F32 -> MemorySegment.copy(w, 0, seg, ValueLayout.JAVA_FLOAT, 0, n);
            case F16, BF16 -> {
                short[] h = new short[n];
                if (out == DType.F16) {
                    ScalarKernels.INSTANCE.f32ToF16(w, 0, h, 0, n);
                } else {
                    ScalarKernels.INSTANCE.f32ToBf16(w, 0, h, 0, n);
                }
                MemorySegment.copy(h, 0, seg, ValueLayout.JAVA_SHORT, 0, n);
            }
            default -> throw new IllegalArgumentException(out.toString());
        }
        return seg;
    }

    /** Asserts equal bits; the first difference is reported with its index and both values. */
    static void assertBitsEqual(String what, MemorySegment want, MemorySegment got, DType out) {
        assertWithin(what, want, got, out, 0);
    }

    /**
     * Asserts that every element is within {@code maxUlps} of the reference, counted in representable values of
     * the output dtype (so +0 and -0 are one apart, as rounding across zero can give).
     */
    static void assertWithin(String what, MemorySegment want, MemorySegment got, DType out, int maxUlps) {
        if (want.byteSize() != got.byteSize()) {
            throw new AssertionError(what + ": " + got.byteSize() + " bytes, expected " + want.byteSize());
        }
        long n = want.byteSize() / (out.bits() / 8);
        for (long i = 0; i < n; i++) {
            long a = ordinal(want, i, out);
            long b = ordinal(got, i, out);
            long d = Math.abs(a - b);
            if (d > maxUlps) {
                throw new AssertionError(what + "[" + i + "] of " + n + ": expected " + show(want, i, out) + " got "
                        + show(got, i, out) + " (" + d + " ulps apart, " + maxUlps + " allowed)");
            }
        }
    }

    /**
     * Asserts equal bits except that where the reference is a NaN any NaN will do: merge steps' arithmetic gives the
     * GPU's canonical NaN where the CPU keeps an operand's payload (docs/CUDA.md, Numerics).
     */
    static void assertBitsEqualAnyNaN(String what, MemorySegment want, MemorySegment got, DType out) {
        long n = want.byteSize() / (out.bits() / 8);
        for (long i = 0; i < n; i++) {
            boolean wantNaN = Double.isNaN(out == DType.F32 ? want.getAtIndex(ValueLayout.JAVA_FLOAT, i)
                    : value(want, i, out));
            boolean gotNaN = Double.isNaN(out == DType.F32 ? got.getAtIndex(ValueLayout.JAVA_FLOAT, i)
                    : value(got, i, out));
            if (wantNaN != gotNaN || (!wantNaN && ordinal(want, i, out) != ordinal(got, i, out))) {
                throw new AssertionError(what + "[" + i + "] of " + n + ": expected " + show(want, i, out) + " got "
                        + show(got, i, out));
            }
        }
    }

    /**
     * The fused mode's bound on one LoRA step (docs/CUDA.md): per element the fp32 result may differ from the
     * exact one by {@code |scale| * (r + 2) * 2^-23 * sum_k |left[i,k] * right[k,j]| + 2^-23 * |w|}, then both
     * are rounded once to the output dtype (monotonic, so at most one output ulp more).
     */
    static void assertFusedWithin(String what, MergeOp.Lora l, long[] shape, MemorySegment exact32,
                                  MemorySegment want, MemorySegment got, DType out) {
        long n = want.byteSize() / (out.bits() / 8);
        int cols = (int) (n / shape[0]);
        int r = l.r();
        double eps = Math.scalb(1.0, -23);
        for (long e = 0; e < n; e++) {
            int i = (int) (e / cols);
            int j = (int) (e % cols);
            double s = 0;
            for (int k = 0; k < r; k++) {
                s += Math.abs((double) l.left()[i * r + k] * l.right()[k * cols + j]);
            }
            double w = exact32.getAtIndex(ValueLayout.JAVA_FLOAT, e);
            double bound = Math.abs(l.scale()) * (r + 2) * eps * s + eps * Math.abs(w);
            double a = value(want, e, out);
            double b = value(got, e, out);
            float top = (float) (Math.abs(a) + bound);
            double ulp = out == DType.F16 ? Math.max(Math.scalb(1.0, -24), Math.scalb(Math.ulp(top), 13))
                    : Math.scalb(Math.ulp(top), 16);
            if (Double.isNaN(a) != Double.isNaN(b) || Math.abs(a - b) > bound + ulp) {
                throw new AssertionError(what + "[" + e + "] of " + n + ": expected " + show(want, e, out) + " got "
                        + show(got, e, out) + " (bound " + bound + " + one output ulp " + ulp + ")");
            }
        }
    }

    private static double value(MemorySegment s, long i, DType out) {
        short b = s.getAtIndex(ValueLayout.JAVA_SHORT, i);
        return out == DType.F16 ? Float.float16ToFloat(b) : Float.intBitsToFloat(b << 16);
    }

    /**
     * Position of a value on the number line of its type: sign-magnitude bits made monotonic, one to one (-0 is
     * -1, +0 is 0), so that a distance of 0 means equal bits.
     */
    private static long ordinal(MemorySegment s, long i, DType out) {
        if (out == DType.F32) {
            int b = s.getAtIndex(ValueLayout.JAVA_INT, i);
            return b >= 0 ? b : (long) Integer.MIN_VALUE - b - 1;
        }
        short b = s.getAtIndex(ValueLayout.JAVA_SHORT, i);
        return b >= 0 ? b : Short.MIN_VALUE - b - 1;
    }

    private static String show(MemorySegment s, long i, DType out) {
        if (out == DType.F32) {
            int b = s.getAtIndex(ValueLayout.JAVA_INT, i);
            return Float.intBitsToFloat(b) + String.format(" (0x%08x)", b);
        }
        short b = s.getAtIndex(ValueLayout.JAVA_SHORT, i);
        float f = out == DType.F16 ? Float.float16ToFloat(b) : Float.intBitsToFloat(b << 16);
        return f + String.format(" (0x%04x)", b & 0xFFFF);
    }
}

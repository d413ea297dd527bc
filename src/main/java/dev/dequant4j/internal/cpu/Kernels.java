package dev.dequant4j.internal.cpu;

import dev.dequant4j.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Chooses the CPU kernels once: the Vector API implementation when the {@code jdk.incubator.vector} module is
 * present and usable, the scalar reference otherwise. {@code -Ddequant4j.cpu=scalar} forces the reference.
 */
public final class Kernels {
    private Kernels() {}

    private static final class Holder {
        static final CpuKernels INSTANCE = VectorLookup.lookup();
    }

    /** The kernels to use on this JVM. */
    public static CpuKernels get() {
        return Holder.INSTANCE;
    }

    /**
     * Rounds {@code count} float32 values once, to nearest even, to {@code dtype} (F32, F16 or BF16) and stores them
     * in native byte order at element {@code at} of {@code dst}; returns the scratch array for 16-bit values, grown
     * if {@code scratch} was null or too small, for the caller's next chunk.
     */
    public static short[] storeRounded(float[] values, int count, DType dtype, MemorySegment dst, long at,
                                       short[] scratch) {
        if (dtype == DType.F32) {
            MemorySegment.copy(values, 0, dst, ValueLayout.JAVA_FLOAT_UNALIGNED, at * 4, count);
            return scratch;
        }
        short[] half = scratch != null && scratch.length >= count ? scratch : new short[count];
        switch (dtype) {
            case F16 -> get().f32ToF16(values, 0, half, 0, count);
            case BF16 -> get().f32ToBf16(values, 0, half, 0, count);
            default -> throw new IllegalArgumentException("dtype must be F32, F16 or BF16, not " + dtype);
        }
        MemorySegment.copy(half, 0, dst, ValueLayout.JAVA_SHORT_UNALIGNED, at * 2, count);
        return half;
    }

    /** Why the vector kernels are or are not in use, for logs and {@code --verbose}. */
    public static String describe() {
        get();
        return VectorLookup.reason();
    }
}

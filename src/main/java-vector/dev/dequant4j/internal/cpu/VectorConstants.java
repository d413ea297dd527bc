package dev.dequant4j.internal.cpu;

import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

/**
 * The species and shuffles of {@link VectorKernels}, static final so that C2 constant-folds them, and in their own
 * class so that nothing vector-typed is initialized before {@link VectorKernels}' constructor has run its checks.
 */
final class VectorConstants {
    private VectorConstants() {}

    /**
     * Tests only: {@code -Ddequant4j.vector.bits=128|256|512} makes the kernels use that vector size instead of the
     * preferred one, so that every code path can be checked against the reference on one machine (sizes the CPU lacks
     * are emulated by the JDK: correct, but slow).
     */
    static Integer testBits() {
        return Integer.getInteger("dequant4j.vector.bits");
    }

    /** Vector size in bits: the preferred one (capped at 512, the widest this code was tested with). */
    static final int BITS = testBits() != null ? testBits()
            : Math.min(512, VectorShape.preferredShape().vectorBitSize());
    static final VectorSpecies<Float> FLOATS = VectorSpecies.of(float.class, VectorShape.forBitSize(BITS));
    static final VectorSpecies<Integer> INTS = VectorSpecies.of(int.class, VectorShape.forBitSize(BITS));
    /** Float lanes per vector. */
    static final int VL = FLOATS.length();
    /** Shorts filling a whole vector (for bit tests on F16/BF16 output). */
    static final VectorSpecies<Short> SHORT_LANES = VectorSpecies.of(short.class, VectorShape.forBitSize(BITS));
    /** One short per float lane. */
    static final VectorSpecies<Short> SHORTS = VectorSpecies.of(short.class, VectorShape.forBitSize(BITS / 2));
    /** One byte per float lane, but at least 8 (the smallest byte vector): then PARTS > 1 int vectors per load. */
    static final VectorSpecies<Byte> BYTES = VectorSpecies.of(byte.class, VectorShape.forBitSize(Math.max(64, VL * 8)));
    /** Int vectors per byte vector. */
    static final int PARTS = BYTES.length() / VL;
    /** 4-bit elements per byte vector. */
    static final int UNIT = 2 * BYTES.length();
    /** Lanes 0,0,1,1,...: the first half of an int vector, each lane twice. */
    static final VectorShuffle<Integer> DUP_LO = VectorShuffle.fromOp(INTS, i -> i / 2);
    /** Lanes VL/2,VL/2,...: the second half, each lane twice. */
    static final VectorShuffle<Integer> DUP_HI = VectorShuffle.fromOp(INTS, i -> VL / 2 + i / 2);
    /** 4,0,4,0,...: even lanes take the high nibble. */
    static final IntVector NIBBLE_SHIFT = IntVector.fromArray(INTS, nibbleShifts(), 0);

    private static int[] nibbleShifts() {
        int[] s = new int[VL];
        for (int i = 0; i < VL; i += 2) {
            s[i] = 4;
        }
        return s;
    }
}

package dev.dequant4j.internal.cpu;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Random;
import org.junit.jupiter.api.BeforeEach;

/**
 * Gives a test both kernel implementations, in the style of Lucene's {@code BaseVectorizationTestCase}: the scalar
 * reference and the Vector API kernels, constructed directly (not through {@link Kernels}, so that a forced or failed
 * lookup cannot make the test compare the reference with itself). Tests are skipped when the Vector API kernels
 * cannot be constructed on this JVM; surefire passes {@code --add-modules jdk.incubator.vector}.
 */
abstract class BaseKernelsTestCase {
    static final CpuKernels SCALAR = ScalarKernels.INSTANCE;
    static final CpuKernels VECTOR = vectorKernels();
    /** Why {@link #VECTOR} is null, if it is. */
    private static String unavailable;

    /** Random per test unless {@code -Dtests.seed=...}; every failure message names it, to replay the failure. */
    final long seed = Long.getLong("tests.seed", new Random().nextLong());
    final Random random = new Random(seed);

    private static CpuKernels vectorKernels() {
        try {
            return (CpuKernels) Class.forName("dev.dequant4j.internal.cpu.VectorKernels").getConstructor()
                    .newInstance();
        } catch (ReflectiveOperationException | LinkageError e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            unavailable = cause.toString();
            return null;
        }
    }

    @BeforeEach
    void assumeVectorKernels() {
        assumeTrue(VECTOR != null, () -> "no Vector API kernels on this JVM: " + unavailable);
    }

    /** Float bits for messages: value and raw bits. */
    static String bits(float f) {
        return f + " (0x" + Integer.toHexString(Float.floatToRawIntBits(f)) + ")";
    }

    void assertSameBits(float[] want, float[] got, String what) {
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                throw new AssertionError(what + " [" + i + "]: scalar " + bits(want[i]) + ", " + VECTOR.name() + " "
                        + bits(got[i]) + " (-Dtests.seed=" + seed + ")");
            }
        }
    }

    void assertSameBits(short[] want, short[] got, String what) {
        for (int i = 0; i < want.length; i++) {
            if (want[i] != got[i]) {
                throw new AssertionError(what + " [" + i + "]: scalar 0x" + Integer.toHexString(want[i] & 0xFFFF)
                        + ", " + VECTOR.name() + " 0x" + Integer.toHexString(got[i] & 0xFFFF) + " (-Dtests.seed="
                        + seed + ")");
            }
        }
    }

    /** Floats of every kind: mixed magnitudes and signs, zeros, subnormals, infinities, NaNs with payloads. */
    float anyFloat() {
        return switch (random.nextInt(16)) {
            case 0 -> Float.intBitsToFloat(random.nextInt());
            case 1 -> SPECIALS[random.nextInt(SPECIALS.length)];
            default -> (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(40) - 20));
        };
    }

    /** Finite values of mixed magnitude, so that any change in the order of a sum changes its rounding. */
    float finiteFloat() {
        return (float) (random.nextGaussian() * Math.scalb(1.0, random.nextInt(24) - 12));
    }

    static final float[] SPECIALS = {
        0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL, Float.MAX_VALUE, -Float.MAX_VALUE,
        Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN, Float.intBitsToFloat(0x7F800001),
        Float.intBitsToFloat(0xFFBFFFFF), Float.intBitsToFloat(0x7FC00001), 1f, -1f, 65504f, 65520f, 0x1p-24f,
        0x1p-25f, 0x1.8p-25f, 0x1p-14f, 0x1.ff8p-15f,
    };
}

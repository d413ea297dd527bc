package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.dequant4j.internal.cpu.Kernels;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The Vector API K-quant search gives the same bytes as the scalar reference on random rows: Gaussian rows of every
 * magnitude, all-positive and all-negative rows, few-valued rows (ties, flat sub-blocks, det == 0, sub-blocks below q6_K's epsilon), and rows with
 * zeros, -0.0, subnormals, infinities and NaN, including in single sub-blocks so that lanes take different branches.
 */
class SubBlockSearchDifferentialTest {
    private static final SubBlockSearch VECTOR = SubBlockSearch.lookup();
    private static final float[] SPECIALS = {0f, -0f, Float.MIN_VALUE, -Float.MIN_VALUE, Float.MIN_NORMAL,
        Float.MAX_VALUE, -Float.MAX_VALUE, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.NaN, 1f, -1f};
    private static final int ROWS = 600;

    private final long seed = Long.getLong("tests.seed", new Random().nextLong());
    private final Random random = new Random(seed);

    private float value(int kind, float scale) {
        return switch (kind) {
            case 0 -> (float) random.nextGaussian() * scale;
            case 1 -> Math.abs((float) random.nextGaussian()) * scale;
            case 2 -> -Math.abs((float) random.nextGaussian()) * scale;
            case 3 -> (random.nextInt(5) - 2) * scale;
            case 4 -> random.nextInt(3) == 0 ? (float) random.nextGaussian() * scale : 0f;
            default -> random.nextInt(64) == 0 ? SPECIALS[random.nextInt(SPECIALS.length)]
                    : (float) random.nextGaussian() * scale;
        };
    }

    private float[] rows() {
        float[] x = new float[ROWS * 256];
        for (int sb = 0; sb < x.length / 32; sb++) {
            int kind = random.nextInt(8);
            float scale = (float) Math.scalb(1.0, random.nextInt(70) - 55);
            float constant = value(0, scale);
            for (int i = 0; i < 32; i++) {
                // kind 7: a first half below q6_K's GROUP_MAX_EPS (1e-15) beside a normal one
                x[32 * sb + i] = switch (kind) {
                    case 6 -> constant;
                    case 7 -> i < 16 ? value(0, 1e-17f) : value(0, 1f);
                    default -> value(kind, scale);
                };
            }
        }
        return x;
    }

    private static byte[] quantize(GgmlType type, float[] x, SubBlockSearch search) {
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(ROWS * GgmlQuantize.rowSize(type, 256)));
        GgmlQuantize.quantize(type, x, 0, ROWS, 256, out, search);
        return out.array();
    }

    @ParameterizedTest
    @EnumSource(names = {"Q4_K", "Q5_K", "Q6_K"})
    void vectorEqualsScalar(GgmlType type) {
        assumeTrue(VECTOR != null, () -> "no Vector API search on this JVM: " + Kernels.describe());
        float[] x = rows();
        byte[] want = quantize(type, x, null);
        byte[] got = quantize(type, x, VECTOR);
        int rowSize = (int) GgmlQuantize.rowSize(type, 256);
        for (int r = 0; r < ROWS; r++) {
            int r0 = r;
            assertEquals(Arrays.toString(Arrays.copyOfRange(want, r * rowSize, (r + 1) * rowSize)),
                    Arrays.toString(Arrays.copyOfRange(got, r * rowSize, (r + 1) * rowSize)),
                    () -> type + " row " + r0 + " " + Arrays.toString(Arrays.copyOfRange(x, r0 * 256, r0 * 256 + 256))
                            + " (-Dtests.seed=" + seed + ")");
        }
    }
}

package dev.dequant4j.internal.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/**
 * {@code deltaStats} is a statistic, not output: both implementations agree with an independent double-precision
 * computation to a relative 1e-4, let a non-finite merged value through as NaN or infinity, and keep what
 * {@code acc} held before.
 */
class DeltaStatsTest extends BaseKernelsTestCase {
    private void check(int n, boolean specials) {
        float[] base = new float[n];
        float[] merged = new float[n];
        for (int i = 0; i < n; i++) {
            base[i] = (float) (random.nextGaussian() * 0.02);
            merged[i] = base[i] + (float) (random.nextGaussian() * 0.002);
        }
        if (specials && n > 3) {
            merged[random.nextInt(n)] = Float.NaN;
            merged[random.nextInt(n)] = Float.POSITIVE_INFINITY;
        }
        double max = 0.5e-3;
        double d2 = 1.0;
        double b2 = 2.0;
        for (int i = 0; i < n; i++) {
            b2 += (double) base[i] * base[i];
            double d = (double) merged[i] - base[i];
            max = Math.max(max, Math.abs(d));
            d2 += d * d;
        }
        for (CpuKernels k : new CpuKernels[] {SCALAR, VECTOR}) {
            double[] acc = {0.5e-3, 1.0, 2.0};
            k.deltaStats(base, merged, n, acc);
            String what = k.name() + " n=" + n + " (-Dtests.seed=" + seed + ")";
            if (specials && n > 3) {
                assertEquals(true, !Double.isFinite(acc[0]) && !Double.isFinite(acc[1]), what
                        + ": a NaN or infinity goes through");
                assertEquals(b2, acc[2], b2 * 1e-4, what);
                continue;
            }
            assertEquals(max, acc[0], max * 1e-4, what);
            assertEquals(d2, acc[1], d2 * 1e-4, what);
            assertEquals(b2, acc[2], b2 * 1e-4, what);
        }
    }

    @Test
    void agreesWithDoublePrecisionForEveryLength() {
        for (int n = 0; n < 70; n++) {
            check(n, false);
        }
        check(4096, false);
        check(4097, false);
        check(1 << 17, false);
    }

    /**
     * The vector sums are exactly float32 lanes of fused multiply-adds over runs of 4096 elements, the lanes added in
     * lane order in double, on every call: the manifest's figures are then the same in every run, whether the kernel
     * runs interpreted, in C1's Java fallback of the Vector API or compiled by C2 (whose {@code reduceLanes} adds in
     * another order), as it does over these calls.
     */
    @Test
    void theVectorSumsAreTheSameOnEveryCall() {
        int n = 3 * 4096 + 37;
        float[] base = new float[n];
        float[] merged = new float[n];
        for (int i = 0; i < n; i++) {
            base[i] = (float) (random.nextGaussian() * 0.02);
            merged[i] = base[i] + (float) (random.nextGaussian() * 0.002);
        }
        double[] want = laneOrderSums(base, merged, n, VectorConstants.VL);
        for (int call = 0; call < 3000; call++) {
            double[] acc = new double[3];
            VECTOR.deltaStats(base, merged, n, acc);
            assertEquals(want[0], acc[1], "sum of delta^2, call " + call + " (-Dtests.seed=" + seed + ")");
            assertEquals(want[1], acc[2], "sum of base^2, call " + call + " (-Dtests.seed=" + seed + ")");
        }
    }

    /** {@code [sum delta^2, sum base^2]} as the vector kernel defines them, lane by lane; the tail as the reference. */
    private static double[] laneOrderSums(float[] base, float[] merged, int n, int vl) {
        int vecEnd = n - n % vl;
        double[] sums = new double[3];
        for (int run = 0; run < vecEnd; run += 4096) {
            int end = Math.min(vecEnd, run + 4096);
            for (int lane = 0; lane < vl; lane++) {
                float d2 = 0;
                float b2 = 0;
                for (int i = run + lane; i < end; i += vl) {
                    float d = merged[i] - base[i];
                    d2 = Math.fma(d, d, d2);
                    b2 = Math.fma(base[i], base[i], b2);
                }
                sums[1] += d2;
                sums[2] += b2;
            }
        }
        double[] tail = new double[3];
        SCALAR.deltaStats(java.util.Arrays.copyOfRange(base, vecEnd, n),
                java.util.Arrays.copyOfRange(merged, vecEnd, n), n - vecEnd, tail);
        return new double[] {sums[1] + tail[1], sums[2] + tail[2]};
    }

    @Test
    void nonFiniteMergedValuesMakeTheStatisticsNonFinite() {
        for (int n : new int[] {5, 33, 4099, 70_000}) {
            check(n, true);
        }
    }
}

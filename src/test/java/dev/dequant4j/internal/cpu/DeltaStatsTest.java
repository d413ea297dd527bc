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

    @Test
    void nonFiniteMergedValuesMakeTheStatisticsNonFinite() {
        for (int n : new int[] {5, 33, 4099, 70_000}) {
            check(n, true);
        }
    }
}

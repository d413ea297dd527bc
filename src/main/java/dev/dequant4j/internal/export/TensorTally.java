package dev.dequant4j.internal.export;

/**
 * Per-tensor figures gathered while the units of a tensor are produced, possibly by several threads: values that
 * are not finite in the output (NaN, infinity, or a finite float32 beyond the output dtype's range), and for merged
 * tensors the size of the change {@code delta = merged - base}: the largest |delta| and the relative Frobenius norm
 * {@code ||delta|| / ||base||}.
 */
final class TensorTally {
    private long nonFinite;
    private long firstNonFinite = -1;
    private double maxAbsDelta;
    private double sumDelta2;
    private double sumBase2;

    synchronized void addNonFinite(long count, long firstIndex) {
        if (count > 0) {
            nonFinite += count;
            if (firstNonFinite < 0 || firstIndex < firstNonFinite) {
                firstNonFinite = firstIndex;
            }
        }
    }

    /** Adds a merged chunk's {@code [max |delta|, sum delta^2, sum base^2]} (see {@code CpuKernels.deltaStats}). */
    synchronized void addDelta(double[] stats) {
        maxAbsDelta = Math.max(maxAbsDelta, stats[0]);
        sumDelta2 += stats[1];
        sumBase2 += stats[2];
    }

    synchronized long nonFinite() {
        return nonFinite;
    }

    synchronized long firstNonFinite() {
        return firstNonFinite;
    }

    synchronized double maxAbsDelta() {
        return maxAbsDelta;
    }

    /** {@code ||delta|| / ||base||}: 0 if nothing changed, infinite if an all-zero base changed. */
    synchronized double relDeltaNorm() {
        if (sumDelta2 == 0) {
            return 0;
        }
        return sumBase2 == 0 ? Double.POSITIVE_INFINITY : Math.sqrt(sumDelta2) / Math.sqrt(sumBase2);
    }
}

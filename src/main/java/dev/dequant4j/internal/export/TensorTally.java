package dev.dequant4j.internal.export;

import java.util.TreeMap;

/**
 * Per-tensor figures gathered while the units of a tensor are produced, possibly by several threads: values that
 * are not finite in the output (NaN, infinity, or a finite float32 beyond the output dtype's range), and for merged
 * tensors the size of the change {@code delta = merged - base}: the largest |delta| and the relative Frobenius norm
 * {@code ||delta|| / ||base||}. The sums are kept per chunk and added in the chunks' element order, so that the
 * figures, written to the manifest, are the same in every run whichever worker finishes a chunk first.
 */
final class TensorTally {
    private long nonFinite;
    private long firstNonFinite = -1;
    private double maxAbsDelta;
    /** Each chunk's {@code [sum delta^2, sum base^2]}, by the chunk's first element. */
    private final TreeMap<Long, double[]> sums = new TreeMap<>();

    synchronized void addNonFinite(long count, long firstIndex) {
        if (count > 0) {
            nonFinite += count;
            if (firstNonFinite < 0 || firstIndex < firstNonFinite) {
                firstNonFinite = firstIndex;
            }
        }
    }

    /**
     * Adds the {@code [max |delta|, sum delta^2, sum base^2]} (see {@code CpuKernels.deltaStats}) of the merged chunk
     * that starts at element {@code firstElement} of the tensor.
     */
    synchronized void addDelta(long firstElement, double[] stats) {
        maxAbsDelta = Math.max(maxAbsDelta, stats[0]);
        sums.merge(firstElement, new double[] {stats[1], stats[2]}, (a, b) -> new double[] {a[0] + b[0], a[1] + b[1]});
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
        double sumDelta2 = 0;
        double sumBase2 = 0;
        for (double[] chunk : sums.values()) {
            sumDelta2 += chunk[0];
            sumBase2 += chunk[1];
        }
        if (sumDelta2 == 0) {
            return 0;
        }
        return sumBase2 == 0 ? Double.POSITIVE_INFINITY : Math.sqrt(sumDelta2) / Math.sqrt(sumBase2);
    }
}

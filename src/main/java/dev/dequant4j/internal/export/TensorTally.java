package dev.dequant4j.internal.export;

/**
 * Per-tensor figures gathered while units of a tensor are produced, possibly by several threads: non-finite
 * values (NaN, infinity, or a finite float32 that overflows the output dtype), and for merged tensors the size of
 * the change, {@code delta = merged - base}.
 */
final class TensorTally {
    private long nonFinite;
    private long firstNonFinite = -1;
    private double maxAbsDelta;
    private double sumDelta2;
    private double sumBase2;

    synchronized void add(long nonFiniteCount, long firstIndex, double maxAbs, double delta2, double base2) {
        if (nonFiniteCount > 0) {
            nonFinite += nonFiniteCount;
            if (firstNonFinite < 0 || firstIndex < firstNonFinite) {
                firstNonFinite = firstIndex;
            }
        }
        maxAbsDelta = Math.max(maxAbsDelta, maxAbs);
        sumDelta2 += delta2;
        sumBase2 += base2;
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

    /** ||delta|| / ||W||; 0 when nothing changed, infinite when the base is all zero but the result is not. */
    synchronized double relDeltaNorm() {
        if (sumDelta2 == 0) {
            return 0;
        }
        return sumBase2 == 0 ? Double.POSITIVE_INFINITY : Math.sqrt(sumDelta2) / Math.sqrt(sumBase2);
    }
}

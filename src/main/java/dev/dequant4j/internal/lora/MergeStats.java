package dev.dequant4j.internal.lora;

import dev.dequant4j.Dequant4jException;
import java.nio.file.Path;

/**
 * Statistics of one merged tensor, accumulated over chunks: the largest {@code |merged - base|}, the relative size
 * of the change {@code ||merged - base|| / ||base||} (Frobenius norms), and how many merged values are not finite.
 * Differences and squares are taken in double, where {@code merged - base} of two floats is exact. Chunks may be
 * accumulated by several threads into their own instances and combined with {@link #add(MergeStats)}; the sums then
 * depend on how the chunks were split only in the last bits of a double.
 */
public final class MergeStats {
    private long count;
    private double maxAbsDelta;
    private double sumDelta2;
    private double sumBase2;
    private long nonFinite;
    private long firstNonFinite = -1;

    /**
     * Adds {@code n} elements: {@code base[baseOff..]} before and {@code merged[mergedOff..]} after the merge, whose
     * first element is element {@code start} of the flattened tensor. A non-finite merged value is counted (and
     * left out of the delta sums); a non-finite base value counts into the base norm as is.
     */
    public void accept(long start, float[] base, int baseOff, float[] merged, int mergedOff, int n) {
        for (int i = 0; i < n; i++) {
            double w = base[baseOff + i];
            float m = merged[mergedOff + i];
            sumBase2 += w * w;
            if (!Float.isFinite(m)) {
                if (nonFinite++ == 0 || start + i < firstNonFinite) {
                    firstNonFinite = start + i;
                }
                continue;
            }
            double d = m - w;
            double ad = Math.abs(d);
            if (ad > maxAbsDelta) {
                maxAbsDelta = ad;
            }
            sumDelta2 += d * d;
        }
        count += n;
    }

    /** Adds another accumulator's elements to this one. */
    public void add(MergeStats o) {
        count += o.count;
        maxAbsDelta = Math.max(maxAbsDelta, o.maxAbsDelta);
        sumDelta2 += o.sumDelta2;
        sumBase2 += o.sumBase2;
        if (o.nonFinite > 0 && (nonFinite == 0 || o.firstNonFinite < firstNonFinite)) {
            firstNonFinite = o.firstNonFinite;
        }
        nonFinite += o.nonFinite;
    }

    /** Elements seen. */
    public long count() {
        return count;
    }

    /** The largest {@code |merged - base|} over the finite merged values. */
    public double maxAbsDelta() {
        return maxAbsDelta;
    }

    /** {@code sqrt(sum (merged - base)^2)}, over the finite merged values. */
    public double deltaNorm() {
        return Math.sqrt(sumDelta2);
    }

    /** {@code sqrt(sum base^2)}. */
    public double baseNorm() {
        return Math.sqrt(sumBase2);
    }

    /** {@code ||delta|| / ||base||}: 0 if nothing changed, infinite if an all-zero base changed. */
    public double relativeDelta() {
        if (sumDelta2 == 0) {
            return 0;
        }
        return sumBase2 == 0 ? Double.POSITIVE_INFINITY : Math.sqrt(sumDelta2) / Math.sqrt(sumBase2);
    }

    /** Merged values that are NaN or infinite. */
    public long nonFinite() {
        return nonFinite;
    }

    /** The flattened index of the first non-finite merged value, or -1. */
    public long firstNonFinite() {
        return firstNonFinite;
    }

    /**
     * Throws if any merged value is not finite, naming the tensor: a broken adapter (PEFT's safe_merge raises the
     * same way) or an overflow must not be written.
     */
    public void requireFinite(Path source, String tensor) {
        if (nonFinite > 0) {
            throw new Dequant4jException(source, tensor, "merging gives " + nonFinite + " non-finite value"
                    + (nonFinite == 1 ? "" : "s") + " (first at flat index " + firstNonFinite + "); the adapter seems"
                    + " to be broken");
        }
    }

    @Override
    public String toString() {
        return "MergeStats[n=" + count + ", max|delta|=" + maxAbsDelta + ", rel=" + relativeDelta() + ", nonFinite="
                + nonFinite + "]";
    }
}

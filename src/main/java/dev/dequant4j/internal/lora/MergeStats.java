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
        // Four independent sums per quantity: one chain of dependent double additions per element would make this
        // loop, which sees every merged element, run at the latency of an addition.
        double b0 = 0, b1 = 0, b2 = 0, b3 = 0;
        double d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        double max = maxAbsDelta;
        int i = 0;
        for (; i + 4 <= n; i += 4) {
            double w0 = base[baseOff + i];
            double w1 = base[baseOff + i + 1];
            double w2 = base[baseOff + i + 2];
            double w3 = base[baseOff + i + 3];
            b0 += w0 * w0;
            b1 += w1 * w1;
            b2 += w2 * w2;
            b3 += w3 * w3;
            double e0 = merged[mergedOff + i] - w0;
            double e1 = merged[mergedOff + i + 1] - w1;
            double e2 = merged[mergedOff + i + 2] - w2;
            double e3 = merged[mergedOff + i + 3] - w3;
            if (!(Math.abs(e0) + Math.abs(e1) + Math.abs(e2) + Math.abs(e3) < Double.POSITIVE_INFINITY)) {
                // A NaN or infinity among the four: take them one at a time.
                for (int j = i; j < i + 4; j++) {
                    double dj = merged[mergedOff + j] - (double) base[baseOff + j];
                    if (Float.isFinite(merged[mergedOff + j])) {
                        d0 += dj * dj;
                        max = Math.max(max, Math.abs(dj));
                    } else if (nonFinite++ == 0 || start + j < firstNonFinite) {
                        firstNonFinite = start + j;
                    }
                }
                continue;
            }
            d0 += e0 * e0;
            d1 += e1 * e1;
            d2 += e2 * e2;
            d3 += e3 * e3;
            max = Math.max(max, Math.max(Math.max(Math.abs(e0), Math.abs(e1)), Math.max(Math.abs(e2), Math.abs(e3))));
        }
        for (; i < n; i++) {
            double w = base[baseOff + i];
            float m = merged[mergedOff + i];
            b0 += w * w;
            if (!Float.isFinite(m)) {
                if (nonFinite++ == 0 || start + i < firstNonFinite) {
                    firstNonFinite = start + i;
                }
                continue;
            }
            double d = m - w;
            max = Math.max(max, Math.abs(d));
            d0 += d * d;
        }
        sumBase2 += (b0 + b1) + (b2 + b3);
        sumDelta2 += (d0 + d1) + (d2 + d3);
        maxAbsDelta = max;
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

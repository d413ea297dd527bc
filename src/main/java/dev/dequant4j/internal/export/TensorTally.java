package dev.dequant4j.internal.export;

import dev.dequant4j.internal.lora.MergeStats;

/**
 * Per-tensor figures gathered while the units of a tensor are produced, possibly by several threads: values that
 * are not finite in the output (NaN, infinity, or a finite float32 beyond the output dtype's range), and for merged
 * tensors the size of the change.
 */
final class TensorTally {
    private long nonFinite;
    private long firstNonFinite = -1;
    private final MergeStats delta = new MergeStats();

    synchronized void addNonFinite(long count, long firstIndex) {
        if (count > 0) {
            nonFinite += count;
            if (firstNonFinite < 0 || firstIndex < firstNonFinite) {
                firstNonFinite = firstIndex;
            }
        }
    }

    synchronized void addDelta(MergeStats chunk) {
        delta.add(chunk);
    }

    synchronized long nonFinite() {
        return nonFinite;
    }

    synchronized long firstNonFinite() {
        return firstNonFinite;
    }

    synchronized double maxAbsDelta() {
        return delta.maxAbsDelta();
    }

    synchronized double relDeltaNorm() {
        return delta.relativeDelta();
    }
}

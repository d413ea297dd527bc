package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class TensorTallyTest {
    @Test
    void chunksCombineIntoMaxAndRelativeNorm() {
        TensorTally t = new TensorTally();
        t.addDelta(new double[] {0.5, 0.25, 9});
        t.addDelta(new double[] {2.0, 4.0, 17});
        assertEquals(2.0, t.maxAbsDelta());
        assertEquals(Math.sqrt(4.25) / Math.sqrt(26), t.relDeltaNorm(), 1e-15);
    }

    @Test
    void relativeNormOfUnchangedAndOfZeroBase() {
        TensorTally t = new TensorTally();
        t.addDelta(new double[] {0, 0, 0});
        assertEquals(0.0, t.relDeltaNorm());
        t.addDelta(new double[] {1, 1, 0});
        assertTrue(Double.isInfinite(t.relDeltaNorm()));
    }

    @Test
    void nonFiniteKeepsTheEarliestIndexAcrossChunks() {
        TensorTally t = new TensorTally();
        t.addNonFinite(0, -1);
        t.addNonFinite(2, 500);
        t.addNonFinite(1, 40);
        assertEquals(3, t.nonFinite());
        assertEquals(40, t.firstNonFinite());
    }
}

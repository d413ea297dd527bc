package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class TensorTallyTest {
    @Test
    void chunksCombineIntoMaxAndRelativeNorm() {
        TensorTally t = new TensorTally();
        t.addDelta(0, new double[] {0.5, 0.25, 9});
        t.addDelta(100, new double[] {2.0, 4.0, 17});
        assertEquals(2.0, t.maxAbsDelta());
        assertEquals(Math.sqrt(4.25) / Math.sqrt(26), t.relDeltaNorm(), 1e-15);
    }

    @Test
    void relativeNormOfUnchangedAndOfZeroBase() {
        TensorTally t = new TensorTally();
        t.addDelta(0, new double[] {0, 0, 0});
        assertEquals(0.0, t.relDeltaNorm());
        t.addDelta(100, new double[] {1, 1, 0});
        assertTrue(Double.isInfinite(t.relDeltaNorm()));
    }

    /**
     * 1e16 + 1 rounds to 1e16 in a double: summed in the order chunks arrive, the norm would depend on which worker
     * finished first (1e16 first: the sixteen ones are lost; last: they count).
     */
    @Test
    void theNormDoesNotDependOnTheOrderChunksArriveIn() {
        TensorTally inOrder = new TensorTally();
        TensorTally reversed = new TensorTally();
        for (int i = 0; i <= 16; i++) {
            inOrder.addDelta(i * 64L, chunk(i));
            reversed.addDelta((16 - i) * 64L, chunk(16 - i));
        }
        assertEquals(inOrder.relDeltaNorm(), reversed.relDeltaNorm());
        assertEquals(Math.sqrt(1e16) / Math.sqrt(17), inOrder.relDeltaNorm(), "summed in element order");
    }

    private static double[] chunk(int i) {
        return new double[] {1, i == 0 ? 1e16 : 1, 1};
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

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** How many elements one merge call takes: whole rows, never more than an array holds. */
class CpuMaterializerTest {
    @Test
    void mergeStepsAreWholeRowsThatFitInAnArray() {
        assertEquals(CpuMaterializer.SUB, CpuMaterializer.mergeStep(1), "short rows: a sub-chunk's worth");
        assertEquals(CpuMaterializer.MERGE_ROWS * 4096, CpuMaterializer.mergeStep(4096));
        assertEquals(CpuMaterializer.MERGE_ROWS * 14336, CpuMaterializer.mergeStep(14336));
        for (long cols : new long[] {1L << 26, 1L << 27, (1L << 30) - 3, Integer.MAX_VALUE / 2}) {
            int step = CpuMaterializer.mergeStep(cols);
            assertTrue(step > 0 && step % cols == 0 && step <= Integer.MAX_VALUE - 8,
                    cols + " columns: step " + step);
        }
    }
}

package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.Internals;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Reads outside a tensor or its destination fail cleanly, whatever the numbers (no overflowing sums). */
class RangeChecksTest {
    @ParameterizedTest
    @CsvSource({
        "llama-h64-nf4-dq, model.layers.0.self_attn.q_proj.weight, 4096",
        "llama-h64-nf4, model.layers.0.mlp.down_proj.weight, 10240",
        "llama-h64-int8, model.layers.0.self_attn.k_proj.weight, 2048",
        "llama-h64-int8, model.norm.weight, 64"})
    void outOfRangeReadsAreRefused(String checkpoint, String name, long numel) {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(checkpoint))) {
            float[] dst = new float[8];
            long[][] bad = {{Long.MAX_VALUE, 0, 1}, {Long.MAX_VALUE - 1, 0, 4}, {numel, 0, 1}, {numel - 1, 0, 2},
                {-1, 0, 1}, {0, 0, -1}, {0, Integer.MAX_VALUE, 2}, {0, -1, 1}, {0, 7, 2}};
            for (long[] b : bad) {
                IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
                        () -> c.readFloats(name, b[0], dst, (int) b[1], (int) b[2]));
                assertEquals(b[2] + " elements at " + b[0] + " of " + name + " (" + numel + " elements) into an "
                        + "array of 8 at " + b[1], e.getMessage());
            }
            // empty reads at either end are fine
            c.readFloats(name, numel, dst, 8, 0);
            c.readFloats(name, 0, dst, 0, 0);

            LogicalTensor t = Internals.checkpoint().logical(c).get(name);
            for (long[] b : new long[][] {{Long.MAX_VALUE, 1}, {numel, 1}, {-1, 1}, {0, -1}}) {
                IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
                        () -> t.readF32(b[0], new float[8], 0, (int) b[1]));
                assertEquals(b[1] + " elements at " + b[0] + " outside " + name + " (" + numel + " elements)",
                        e.getMessage());
            }
        }
    }
}

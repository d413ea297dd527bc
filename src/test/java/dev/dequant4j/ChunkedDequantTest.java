package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Reading a tensor in ranges gives the same bits as reading it whole, whatever the range boundaries: the merge and
 * export read bases in row chunks, which start inside 4-bit blocks and past the first 256-block of double-quant
 * scales.
 */
class ChunkedDequantTest {
    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void rangesEqualWholeReads(String name) {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name))) {
            for (TensorInfo t : c.tensors()) {
                if (!t.isFloat()) {
                    continue;
                }
                float[] whole = c.readFloats(t.name());
                for (int chunk : new int[] {65, 336}) {
                    float[] parts = new float[whole.length];
                    for (int off = 0; off < whole.length; off += chunk) {
                        c.readFloats(t.name(), off, parts, off, Math.min(chunk, whole.length - off));
                    }
                    for (int i = 0; i < whole.length; i++) {
                        assertEquals(Float.floatToRawIntBits(whole[i]), Float.floatToRawIntBits(parts[i]),
                                t.name() + "[" + i + "] read in chunks of " + chunk);
                    }
                }
            }
        }
    }
}

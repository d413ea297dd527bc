package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;

/**
 * Any shape, blocksize, quant type, double quant and quant_storage: every element and every range reads as the
 * independently computed dequantization.
 */
class FourBitPropertyTest {
    private static final int[] BLOCKSIZES = {32, 64, 128, 256, 512, 1024, 2048, 4096};
    private static final DType[] STORAGE = {DType.U8, DType.BF16, DType.F16, DType.F32};

    @Property(tries = 60)
    void anyLayoutDequantizesBitForBit(@ForAll @IntRange(min = 1, max = 300) int rows,
                                       @ForAll @IntRange(min = 1, max = 300) int cols,
                                       @ForAll @IntRange(min = 0, max = 7) int blocksizeIndex,
                                       @ForAll boolean nf4, @ForAll boolean doubleQuant,
                                       @ForAll @IntRange(min = 0, max = 3) int storageIndex,
                                       @ForAll long seed) throws IOException {
        long[] shape = {rows, cols};
        int blocksize = BLOCKSIZES[blocksizeIndex];
        DType storage = STORAGE[storageIndex];
        long bytes = ((long) rows * cols + 1) / 2;
        if (bytes % (storage.bits() / 8) != 0) {
            // bitsandbytes cannot view such a byte count as the wider dtype either
            storage = DType.U8;
        }
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(shape, seed), shape,
                nf4 ? "nf4" : "fp4", blocksize, doubleQuant);
        String w = "layers.0.proj.weight";
        Path dir = Files.createTempDirectory("dequant4j-prop");
        try {
            q.addTo(new CheckpointBuilder(), w, storage, "bfloat16", true).write(dir.resolve("c"));
            float[] want = q.expected();
            try (Checkpoint c = Checkpoint.open(dir.resolve("c"))) {
                assertArrayEquals(shape, c.tensor(w).shape());
                assertEquals(storage, c.tensor(w).storedDtype());
                SyntheticFourBitTest.assertBits(want, 0, c.readFloats(w), w);
                SyntheticFourBitTest.assertRanges(c, w, want, blocksize);
            }
        } finally {
            try (Stream<Path> s = Files.walk(dir)) {
                s.sorted(Comparator.reverseOrder()).forEach(p -> {
                    try {
                        Files.delete(p);
                    } catch (IOException e) {
                        throw new UncheckedIOException(e);
                    }
                });
            }
        }
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class SequentialWriterTest {
    @TempDir
    Path tmp;

    /** Pieces of awkward sizes, from aligned native memory, heap arrays and unaligned slices, in any mix. */
    @ParameterizedTest
    @ValueSource(booleans = {true, false})
    void writesExactlyTheBytesGivenWhateverTheirSizesAndAlignment(boolean direct) throws Exception {
        Random rnd = new Random(7);
        ByteArrayOutputStream expected = new ByteArrayOutputStream();
        Path f = tmp.resolve("f.bin");
        try (Arena arena = Arena.ofConfined()) {
            SequentialWriter w = SequentialWriter.create(f, SequentialWriter.DEFAULT_CHANNELS, direct);
            assertEquals(direct, w.isDirect(), "this test's file system does direct I/O");
            int[] sizes = {8, 4088, 4096, 12288, 1, 3 * SequentialWriter.STAGING_BYTES / 2, 4096 * 3, 777, 0, 65536};
            for (int i = 0; i < sizes.length; i++) {
                byte[] b = new byte[sizes[i]];
                rnd.nextBytes(b);
                expected.write(b);
                MemorySegment src = switch (i % 3) {
                    case 0 -> MemorySegment.ofArray(b);
                    case 1 -> {
                        MemorySegment m = arena.allocate(b.length + 4096L, 4096);
                        MemorySegment.copy(b, 0, m, ValueLayout.JAVA_BYTE, 0, b.length);
                        yield m.asSlice(0, b.length);
                    }
                    default -> {
                        MemorySegment m = arena.allocate(b.length + 4096L, 4096);
                        MemorySegment.copy(b, 0, m, ValueLayout.JAVA_BYTE, 3, b.length);
                        yield m.asSlice(3, b.length);
                    }
                };
                w.write(src);
            }
            assertEquals(expected.size(), w.position());
            w.finish();
        }
        assertArrayEquals(expected.toByteArray(), Files.readAllBytes(f));
    }

    @ParameterizedTest
    @ValueSource(booleans = {true})
    void fallsBackToOrdinaryWritesWhereDirectIoIsRefused(boolean direct) throws Exception {
        Path f = tmp.resolve("g.bin");
        SequentialWriter.ChannelFactory noDirect = (p, options) -> {
            if (options.contains(ExtendedOpenOption.DIRECT)) {
                throw new UnsupportedOperationException("no O_DIRECT here");
            }
            return FileChannel.open(p, options);
        };
        SequentialWriter w = SequentialWriter.create(f, noDirect, direct);
        assertFalse(w.isDirect());
        w.write(new byte[] {1, 2, 3});
        w.finish();
        assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(f));
        assertTrue(Files.exists(f));
    }
}

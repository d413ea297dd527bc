package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.sun.nio.file.ExtendedOpenOption;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Opening a checkpoint reads its headers and the few KB per weight that grouping needs (quant states, maps, nested
 * absmax, SCB), not the packed weights around them, and leaves none of them mapped. Through a cold mapping each of
 * those small reads would be a page fault that reads the kernel's read-around window (read_ahead_kb, 8 MiB on the
 * virtio disks we measured), most of the model for a model of many weights; through a warm one, each maps the page
 * cache's folio around it, up to 2 MiB, into the process's resident memory until the export gets there. A cold input
 * is made by copying it with direct I/O, which leaves nothing in the page cache where the file system honours it.
 */
class OpenFootprintTest {
    private static final int ALIGN = 4096;

    @TempDir
    Path tmp;

    /** Three 4-bit weights of 16 MiB packed each, every one followed by its components as bitsandbytes stores them. */
    private Path checkpoint() throws IOException {
        SyntheticCheckpoint s = new SyntheticCheckpoint(7);
        for (String w : List.of("a", "b", "c")) {
            s.fourBit("model.layers.0." + w, new long[] {4096, 8192}, "nf4", 64, true, DType.BF16, DType.F32);
        }
        s.int8("model.layers.1.mlp", 4096, 4096);
        return s.write(Files.createDirectories(tmp.resolve("warm")).resolve("model.safetensors"));
    }

    @Test
    void openingAColdCheckpointReadsItsQuantStatesNotItsWeights() throws IOException {
        Path warm = checkpoint();
        Path cold = Files.createDirectories(tmp.resolve("cold")).resolve("model.safetensors");
        assumeTrue(uncachedCopy(warm, cold), "the file system refuses direct I/O");
        assumeTrue(cachedBytes(cold) <= ALIGN, "the file system caches what direct I/O writes (tmpfs)");

        try (Checkpoint c = Checkpoint.open(cold.getParent())) {
            assertEquals(4, c.tensors().size());
            TensorStore store = Internals.checkpoint().store(c);
            long read = 0;
            for (TensorStore.Ref r : store.refs().values()) {
                read += r.entry().byteSize() <= 64 << 10 ? r.entry().byteSize() : 0;
            }
            long cached = cachedBytes(cold);
            // the header and the small components, each read with what the kernel reads around a positional
            // read (a few pages); not the 48 MiB of packed weights, 1.5 MiB of absmax codes or the int8 weight
            assertTrue(cached <= read + (2L << 20), cached + " bytes of " + Files.size(cold) + " cached after opening;"
                    + " grouping reads " + read);
        }
    }

    @Test
    void openingACheckpointLeavesNoneOfItMapped() throws IOException {
        assumeTrue(ProcessMemory.available(), "needs Linux's /proc/self/smaps");
        Path file = checkpoint();
        try (Checkpoint c = Checkpoint.open(file.getParent())) {
            assertEquals(4, c.tensors().size());
            long resident = ProcessMemory.residentBytes(file);
            assertTrue(resident == 0, resident + " bytes of " + Files.size(file) + " mapped after opening");
        }
    }

    /** Copies {@code src} to {@code dst} with direct I/O (all but the last partial block); false where refused. */
    private static boolean uncachedCopy(Path src, Path dst) throws IOException {
        long size = Files.size(src);
        long aligned = size / ALIGN * ALIGN;
        try (Arena arena = Arena.ofConfined(); FileChannel in = FileChannel.open(src)) {
            ByteBuffer buf = arena.allocate(1 << 20, ALIGN).asByteBuffer();
            try (FileChannel out = FileChannel.open(dst, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
                    ExtendedOpenOption.DIRECT)) {
                for (long pos = 0; pos < aligned; ) {
                    buf.clear().limit((int) Math.min(buf.capacity(), aligned - pos));
                    while (buf.hasRemaining()) {
                        in.read(buf, pos + buf.position());
                    }
                    buf.flip();
                    while (buf.hasRemaining()) {
                        pos += out.write(buf, pos);
                    }
                }
            } catch (UnsupportedOperationException | IOException e) {
                Files.deleteIfExists(dst);
                return false;
            }
            try (FileChannel out = FileChannel.open(dst, StandardOpenOption.WRITE)) {
                ByteBuffer tail = ByteBuffer.allocate((int) (size - aligned));
                in.read(tail, aligned);
                out.write(tail.flip(), aligned);
            }
        }
        return true;
    }

    /** Bytes of {@code file} in the page cache, by 64 KiB chunks ({@code mincore} through a mapping of our own). */
    private static long cachedBytes(Path file) throws IOException {
        long chunk = 64 << 10;
        long cached = 0;
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(file)) {
            MemorySegment map = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            for (long at = 0; at < map.byteSize(); at += chunk) {
                long len = Math.min(chunk, map.byteSize() - at);
                // page by page within a chunk that is not wholly cached, so that a partly cached chunk counts its part
                if (map.asSlice(at, len).isLoaded()) {
                    cached += len;
                } else {
                    for (long p = at; p < at + len; p += ALIGN) {
                        cached += map.asSlice(p, Math.min(ALIGN, at + len - p)).isLoaded() ? ALIGN : 0;
                    }
                }
            }
        }
        return cached;
    }
}

package dev.dequant4j.internal.export;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.OpenOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Set;

/**
 * Writes one new file front to back. With direct I/O (O_DIRECT) the bytes bypass the page cache, which on the
 * machines we measured writes 2-6x faster than page-cache writeback (docs/BENCHMARKS.md); direct I/O needs
 * block-aligned buffers, offsets and lengths, so bytes are staged in an aligned buffer and the tail is padded and
 * the file truncated to its exact size at the end. Where the file system refuses direct I/O (tmpfs, some network
 * file systems) it falls back to ordinary writes. {@code -Ddequant4j.directIO=false} turns direct I/O off.
 */
public final class SequentialWriter implements AutoCloseable {
    /** Opens output files; a seam for fault-injection tests. */
    public interface ChannelFactory {
        FileChannel open(Path path, Set<OpenOption> options) throws IOException;
    }

    public static final ChannelFactory DEFAULT_CHANNELS = FileChannel::open;

    static final int STAGING_BYTES = 8 << 20;
    private static final int ALIGN = 4096;

    private final Path path;
    private final FileChannel channel;
    private final Arena arena;
    private final MemorySegment staging;
    private long filePos;
    private int staged;
    private long logical;

    private SequentialWriter(Path path, FileChannel channel, Arena arena, MemorySegment staging) {
        this.path = path;
        this.channel = channel;
        this.arena = arena;
        this.staging = staging;
    }

    public static boolean directByDefault() {
        return !"false".equals(System.getProperty("dequant4j.directIO"));
    }

    /** Creates {@code path} (which must not exist). */
    public static SequentialWriter create(Path path, ChannelFactory channels, boolean direct) throws IOException {
        Set<OpenOption> plain = Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        if (direct) {
            FileChannel ch = null;
            try {
                ch = channels.open(path, Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
                        ExtendedOpenOption.DIRECT));
            } catch (UnsupportedOperationException | IOException e) {
                // The file system does not do direct I/O: fall back, but only if nothing was created.
                if (Files.exists(path)) {
                    throw e instanceof IOException io ? io : new IOException(e);
                }
            }
            if (ch != null) {
                Arena arena = Arena.ofShared();
                return new SequentialWriter(path, ch, arena, arena.allocate(STAGING_BYTES + ALIGN, ALIGN)
                        .asSlice(0, STAGING_BYTES));
            }
        }
        return new SequentialWriter(path, channels.open(path, plain), null, null);
    }

    public boolean isDirect() {
        return staging != null;
    }

    /** Bytes written so far. */
    public long position() {
        return logical;
    }

    public void write(MemorySegment src) throws IOException {
        logical += src.byteSize();
        if (staging == null) {
            writeFully(src.asByteBuffer(), filePos);
            filePos += src.byteSize();
            return;
        }
        long off = 0;
        if (staged == 0 && src.isNative() && src.address() % ALIGN == 0) {
            // Aligned bytes at an aligned file position go to the device straight from the caller's buffer.
            long aligned = src.byteSize() / ALIGN * ALIGN;
            if (aligned > 0) {
                writeFully(src.asSlice(0, aligned).asByteBuffer(), filePos);
                filePos += aligned;
                off = aligned;
            }
        }
        while (off < src.byteSize()) {
            int n = (int) Math.min(src.byteSize() - off, STAGING_BYTES - staged);
            MemorySegment.copy(src, off, staging, staged, n);
            staged += n;
            off += n;
            if (staged == STAGING_BYTES) {
                flushStaged();
            }
        }
    }

    public void write(byte[] bytes) throws IOException {
        write(MemorySegment.ofArray(bytes));
    }

    /** Writes what is staged in whole aligned blocks, keeping the unaligned rest staged. */
    private void flushStaged() throws IOException {
        int aligned = staged / ALIGN * ALIGN;
        if (aligned == 0) {
            return;
        }
        writeFully(staging.asSlice(0, aligned).asByteBuffer(), filePos);
        filePos += aligned;
        int rest = staged - aligned;
        MemorySegment.copy(staging, aligned, staging, 0, rest);
        staged = rest;
    }

    private void writeFully(ByteBuffer bb, long pos) throws IOException {
        while (bb.hasRemaining()) {
            int n = channel.write(bb, pos);
            if (n <= 0) {
                throw new IOException("no progress writing " + path);
            }
            pos += n;
        }
    }

    /** Writes the staged tail (padded to a block, then truncated away) and closes the file. */
    public void finish() throws IOException {
        try {
            if (staging != null && staged > 0) {
                flushStaged();
                if (staged > 0) {
                    int padded = (staged + ALIGN - 1) / ALIGN * ALIGN;
                    staging.asSlice(staged, padded - staged).fill((byte) 0);
                    writeFully(staging.asSlice(0, padded).asByteBuffer(), filePos);
                    channel.truncate(logical);
                    staged = 0;
                    filePos = logical;
                }
            }
        } finally {
            close();
        }
    }

    @Override
    public void close() throws IOException {
        try {
            channel.close();
        } finally {
            if (arena != null && arena.scope().isAlive()) {
                arena.close();
            }
        }
    }
}

package dev.dequant4j.internal.safetensors;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

/**
 * The files of a {@link ShardedLayout}, created in a directory with their headers written and their full size
 * reserved, so tensors can be written straight to their final place, in any order and from several threads.
 */
public final class ShardFiles implements AutoCloseable {
    private final ShardedLayout layout;
    private final List<FileChannel> channels;
    private final List<Path> paths;

    private ShardFiles(ShardedLayout layout, List<FileChannel> channels, List<Path> paths) {
        this.layout = layout;
        this.channels = channels;
        this.paths = paths;
    }

    public static ShardFiles create(Path dir, ShardedLayout layout) {
        List<FileChannel> channels = new ArrayList<>();
        List<Path> paths = new ArrayList<>();
        ShardFiles files = new ShardFiles(layout, channels, paths);
        try {
            for (ShardedLayout.Shard s : layout.shards()) {
                Path p = dir.resolve(s.fileName());
                paths.add(p);
                FileChannel ch = FileChannel.open(p, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
                        StandardOpenOption.READ);
                channels.add(ch);
                writeFully(ch, ByteBuffer.wrap(s.header()), 0, p);
                if (s.fileSize() > s.header().length) {
                    ch.truncate(s.fileSize());
                    // truncate() never grows a file: write the last byte to give it its full size.
                    writeFully(ch, ByteBuffer.wrap(new byte[1]), s.fileSize() - 1, p);
                }
            }
        } catch (IOException e) {
            files.close();
            throw new Dequant4jException(Kind.IO, paths.isEmpty() ? dir : paths.getLast(),
                    "cannot create output file: " + e.getMessage(), e);
        }
        return files;
    }

    public ShardedLayout layout() {
        return layout;
    }

    public Path path(int shard) {
        return paths.get(shard);
    }

    public FileChannel channel(int shard) {
        return channels.get(shard);
    }

    /** Writes {@code src} at byte {@code offsetInTensor} of the tensor's place. */
    public void write(ShardedLayout.Placement p, long offsetInTensor, MemorySegment src) {
        if (offsetInTensor < 0 || offsetInTensor + src.byteSize() > p.byteSize()) {
            throw new IllegalArgumentException("write of " + src.byteSize() + " bytes at " + offsetInTensor
                    + " outside tensor " + p.spec().name() + " (" + p.byteSize() + " bytes)");
        }
        Path path = paths.get(p.shard());
        try {
            writeFully(channels.get(p.shard()), src.asByteBuffer(), p.fileOffset() + offsetInTensor, path);
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, path, p.spec().name(), "write failed: " + e.getMessage(), e);
        }
    }

    static void writeFully(FileChannel ch, ByteBuffer bb, long position, Path path) throws IOException {
        long pos = position;
        while (bb.hasRemaining()) {
            int n = ch.write(bb, pos);
            if (n <= 0 && bb.hasRemaining()) {
                throw new IOException("no progress writing " + path);
            }
            pos += n;
        }
    }

    /** Flushes every file to the device. */
    public void force() {
        for (int i = 0; i < channels.size(); i++) {
            try {
                channels.get(i).force(true);
            } catch (IOException e) {
                throw new Dequant4jException(Kind.IO, paths.get(i), "fsync failed: " + e.getMessage(), e);
            }
        }
    }

    @Override
    public void close() {
        for (FileChannel ch : channels) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // closing after a failure; the directory is discarded anyway
            }
        }
    }
}

package dev.dequant4j.internal.export;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Writes produced units in file order, so each shard is written front to back in one pass and hashed on the way.
 * Workers {@link #submit} units in any order; the writer thread ({@link #run}) takes them strictly by sequence
 * number. Memory stays bounded because workers only produce into buffers from a fixed pool, which the writer
 * releases as soon as a unit is written.
 */
public final class OrderedWriter {
    /** Opens output files; a seam for fault-injection tests. */
    public interface ChannelFactory {
        FileChannel open(Path path) throws IOException;
    }

    static final ChannelFactory DEFAULT_CHANNELS = p -> FileChannel.open(p, StandardOpenOption.CREATE_NEW,
            StandardOpenOption.WRITE);

    private record Pending(ExportPlan.Unit unit, MemorySegment bytes, Runnable release) {}

    /** Called after each unit is written, with the bytes written so far (headers included). */
    interface Progress {
        void written(ExportPlan.Unit unit, long totalBytes);
    }

    private final Path dir;
    private final ExportPlan plan;
    private final ChannelFactory channels;
    private final Progress progress;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition arrived = lock.newCondition();
    private final Map<Integer, Pending> pending = new HashMap<>();
    private final String[] sha256;
    private volatile boolean aborted;
    private long total;

    OrderedWriter(Path dir, ExportPlan plan, ChannelFactory channels, Progress progress) {
        this.dir = dir;
        this.plan = plan;
        this.channels = channels;
        this.progress = progress;
        this.sha256 = new String[plan.layout().shards().size()];
    }

    void submit(ExportPlan.Unit u, MemorySegment bytes, Runnable release) {
        lock.lock();
        try {
            pending.put(u.seq(), new Pending(u, bytes, release));
            arrived.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Stops the writer (another thread failed); buffers still pending are released. */
    void abort() {
        aborted = true;
        lock.lock();
        try {
            arrived.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** SHA-256 (hex) of each shard, once {@link #run} has returned normally. */
    String sha256(int shard) {
        return sha256[shard];
    }

    /** Writes every unit of the plan, then any shard that holds no data (only a header). */
    void run() throws InterruptedException {
        List<ShardedLayout.Shard> shards = plan.layout().shards();
        int current = -1;
        FileChannel ch = null;
        MessageDigest digest = null;
        long position = 0;
        try {
            for (ExportPlan.Unit expected : plan.units()) {
                Pending p = take(expected.seq());
                if (p == null) {
                    return;
                }
                try {
                    ExportPlan.Unit u = p.unit();
                    if (u.shard() != current) {
                        if (ch != null) {
                            closeShard(current, ch, digest, position);
                        }
                        for (int s = current + 1; s < u.shard(); s++) {
                            writeHeaderOnly(s);
                        }
                        current = u.shard();
                        ch = open(shards.get(current));
                        digest = sha();
                        position = writeHeader(shards.get(current), ch, digest);
                    }
                    if (u.fileOffset() != position) {
                        throw new IllegalStateException("unit " + u.seq() + " at " + u.fileOffset()
                                + " but the file is at " + position);
                    }
                    if (u.byteSize() > 0) {
                        ByteBuffer bb = p.bytes().asSlice(0, u.byteSize()).asByteBuffer();
                        digest.update(bb.duplicate());
                        write(ch, bb, position, shards.get(current).fileName());
                        position += u.byteSize();
                    }
                    total += u.byteSize();
                    progress.written(u, total);
                } finally {
                    p.release().run();
                }
            }
            if (ch != null) {
                closeShard(current, ch, digest, position);
                ch = null;
            }
            for (int s = current + 1; s < shards.size(); s++) {
                writeHeaderOnly(s);
            }
        } finally {
            if (ch != null) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // the export failed already; the directory is discarded
                }
            }
            releaseAll();
        }
    }

    private Pending take(int seq) throws InterruptedException {
        lock.lock();
        try {
            while (!pending.containsKey(seq)) {
                if (aborted) {
                    return null;
                }
                arrived.await();
            }
            return pending.remove(seq);
        } finally {
            lock.unlock();
        }
    }

    private void releaseAll() {
        lock.lock();
        try {
            for (Pending p : pending.values()) {
                p.release().run();
            }
            pending.clear();
        } finally {
            lock.unlock();
        }
    }

    private FileChannel open(ShardedLayout.Shard s) {
        Path p = dir.resolve(s.fileName());
        try {
            return channels.open(p);
        } catch (IOException e) {
            throw new Dequant4jException(p, "cannot create output file: " + e.getMessage(), e);
        }
    }

    private long writeHeader(ShardedLayout.Shard s, FileChannel ch, MessageDigest digest) {
        digest.update(s.header());
        write(ch, ByteBuffer.wrap(s.header()), 0, s.fileName());
        total += s.header().length;
        return s.header().length;
    }

    private void writeHeaderOnly(int shard) {
        ShardedLayout.Shard s = plan.layout().shards().get(shard);
        FileChannel ch = open(s);
        MessageDigest d = sha();
        long pos = writeHeader(s, ch, d);
        closeShard(shard, ch, d, pos);
    }

    private void closeShard(int shard, FileChannel ch, MessageDigest digest, long position) {
        ShardedLayout.Shard s = plan.layout().shards().get(shard);
        if (position != s.fileSize()) {
            throw new IllegalStateException(s.fileName() + ": wrote " + position + " bytes, planned " + s.fileSize());
        }
        try {
            ch.close();
        } catch (IOException e) {
            throw new Dequant4jException(dir.resolve(s.fileName()), "close failed: " + e.getMessage(), e);
        }
        sha256[shard] = HexFormat.of().formatHex(digest.digest());
    }

    private void write(FileChannel ch, ByteBuffer bb, long position, String fileName) {
        try {
            long pos = position;
            while (bb.hasRemaining()) {
                int n = ch.write(bb, pos);
                if (n <= 0) {
                    throw new IOException("no progress");
                }
                pos += n;
            }
        } catch (IOException e) {
            throw new Dequant4jException(dir.resolve(fileName), "write failed: " + e.getMessage()
                    + (isNoSpace(e) ? " (disk full?)" : ""), e);
        }
    }

    private static boolean isNoSpace(IOException e) {
        String m = String.valueOf(e.getMessage());
        return m.contains("No space left") || m.contains("Disk quota");
    }

    private static MessageDigest sha() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}

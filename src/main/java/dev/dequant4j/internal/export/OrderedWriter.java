package dev.dequant4j.internal.export;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Writes produced units in file order, so each shard is written front to back in one pass and hashed on the way.
 * Workers {@link #submit} units in any order; for each lane of the plan, a writer thread ({@link #run}) and a hasher
 * thread ({@link #hash}) each take that lane's units strictly in order. Memory stays bounded because workers only
 * produce into buffers from a fixed pool, and a buffer goes back to it as soon as both its writer and its hasher are
 * done. Progress is reported under a lock, so a listener sees one call at a time.
 */
final class OrderedWriter {
    /** A produced unit; its buffer goes back to the pool once both the writer and the hasher are done with it. */
    private static final class Pending {
        final ExportPlan.Unit unit;
        final MemorySegment bytes;
        final Runnable release;
        int users = 2;

        Pending(ExportPlan.Unit unit, MemorySegment bytes, Runnable release) {
            this.unit = unit;
            this.bytes = bytes;
            this.release = release;
        }
    }

    /** Called after each unit is written, with the bytes written so far (headers included). */
    interface Progress {
        void written(ExportPlan.Unit unit, long totalBytes);
    }

    /**
     * Test seam, null outside tests: each pipeline thread calls it with its kind ({@code "worker"}, {@code "writer"},
     * {@code "hasher"}) before each unit, so that a test can make any of them fail at any point.
     */
    static volatile java.util.function.Consumer<String> faultHook;

    static void beforeUnit(String thread) {
        java.util.function.Consumer<String> hook = faultHook;
        if (hook != null) {
            hook.accept(thread);
        }
    }

    private final Path dir;
    private final ExportPlan plan;
    private final SequentialWriter.ChannelFactory channels;
    private final boolean direct;
    private final Progress progress;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition arrived = lock.newCondition();
    private final Map<Integer, Pending> pending = new HashMap<>();
    private final String[] hashes;
    private volatile boolean aborted;
    private final AtomicLong total = new AtomicLong();
    private final Object progressLock = new Object();

    OrderedWriter(Path dir, ExportPlan plan, SequentialWriter.ChannelFactory channels, boolean direct,
                  Progress progress) {
        this.dir = dir;
        this.plan = plan;
        this.channels = channels;
        this.direct = direct;
        this.progress = progress;
        this.hashes = new String[plan.layout().shards().size()];
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

    /** SHA-256 (hex) of each shard, once {@link #hash} has returned normally. */
    String sha256(int shard) {
        return hashes[shard];
    }

    /** Writes every unit of one lane, and the lane's shards that hold no data (only a header). */
    void run(int lane) throws InterruptedException {
        List<ShardedLayout.Shard> shards = plan.layout().shards();
        List<Integer> mine = plan.laneShards(lane);
        int next = 0;
        int current = -1;
        SequentialWriter out = null;
        try {
            for (ExportPlan.Unit expected : plan.laneUnits(lane)) {
                Pending p = take(expected.seq());
                if (p == null) {
                    return;
                }
                try {
                    beforeUnit("writer");
                    ExportPlan.Unit u = p.unit;
                    if (u.shard() != current) {
                        if (out != null) {
                            closeShard(current, out);
                            out = null;
                        }
                        while (mine.get(next) != u.shard()) {
                            writeHeaderOnly(mine.get(next++));
                        }
                        current = mine.get(next++);
                        out = open(shards.get(current));
                        writeHeader(shards.get(current), out);
                    }
                    if (u.fileOffset() != out.position()) {
                        throw new IllegalStateException("unit " + u.seq() + " at " + u.fileOffset()
                                + " but the file is at " + out.position());
                    }
                    if (u.byteSize() > 0) {
                        write(out, p.bytes.asSlice(0, u.byteSize()), shards.get(current).fileName());
                    }
                    synchronized (progressLock) {
                        // added under the lock, so the totals reported never go back
                        progress.written(u, total.addAndGet(u.byteSize()));
                    }
                } finally {
                    done(p);
                }
            }
            if (out != null) {
                SequentialWriter last = out;
                out = null;
                closeShard(current, last);
            }
            while (next < mine.size()) {
                writeHeaderOnly(mine.get(next++));
            }
        } finally {
            if (out != null) {
                try {
                    out.close();
                } catch (IOException ignored) {
                    // the export failed already; the directory is discarded
                }
            }
        }
    }

    private Pending take(int seq) throws InterruptedException {
        lock.lock();
        try {
            Pending p;
            while ((p = pending.get(seq)) == null) {
                if (aborted) {
                    return null;
                }
                arrived.await();
            }
            return p;
        } finally {
            lock.unlock();
        }
    }

    /** One of the two consumers is done with {@code p}; the second one releases its buffer. */
    private void done(Pending p) {
        boolean last;
        lock.lock();
        try {
            last = --p.users == 0;
            if (last) {
                pending.remove(p.unit.seq());
            }
        } finally {
            lock.unlock();
        }
        if (last) {
            p.release.run();
        }
    }

    /**
     * The hasher of one lane: SHA-256 of each of its shards, headers included, over the same units in the same order
     * as the lane's writer, on its own thread so that hashing and (synchronous, direct) writing overlap.
     */
    void hash(int lane) throws InterruptedException {
        List<ShardedLayout.Shard> shards = plan.layout().shards();
        List<Integer> mine = plan.laneShards(lane);
        int next = 0;
        int current = -1;
        MessageDigest digest = null;
        for (ExportPlan.Unit expected : plan.laneUnits(lane)) {
            Pending p = take(expected.seq());
            if (p == null) {
                return;
            }
            try {
                beforeUnit("hasher");
                ExportPlan.Unit u = p.unit;
                while (current != u.shard()) {
                    if (digest != null) {
                        hashes[current] = HexFormat.of().formatHex(digest.digest());
                    }
                    current = mine.get(next++);
                    digest = Manifest.sha();
                    digest.update(shards.get(current).header());
                }
                if (u.byteSize() > 0) {
                    digest.update(p.bytes.asSlice(0, u.byteSize()).asByteBuffer());
                }
            } finally {
                done(p);
            }
        }
        if (digest != null) {
            hashes[current] = HexFormat.of().formatHex(digest.digest());
        }
        while (next < mine.size()) {
            int s = mine.get(next++);
            MessageDigest d = Manifest.sha();
            d.update(shards.get(s).header());
            hashes[s] = HexFormat.of().formatHex(d.digest());
        }
    }

    /** After a failure: releases the buffers still pending (both consumers have stopped). */
    void releaseAll() {
        lock.lock();
        try {
            for (Pending p : pending.values()) {
                p.release.run();
            }
            pending.clear();
        } finally {
            lock.unlock();
        }
    }

    private SequentialWriter open(ShardedLayout.Shard s) {
        Path p = dir.resolve(s.fileName());
        try {
            return SequentialWriter.create(p, channels, direct);
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, p, "cannot create output file: " + e.getMessage(), e);
        }
    }

    private void writeHeader(ShardedLayout.Shard s, SequentialWriter out) {
        write(out, MemorySegment.ofArray(s.header()), s.fileName());
        total.addAndGet(s.header().length);
    }

    private void writeHeaderOnly(int shard) {
        ShardedLayout.Shard s = plan.layout().shards().get(shard);
        SequentialWriter out = open(s);
        writeHeader(s, out);
        closeShard(shard, out);
    }

    private void closeShard(int shard, SequentialWriter out) {
        ShardedLayout.Shard s = plan.layout().shards().get(shard);
        if (out.position() != s.fileSize()) {
            throw new IllegalStateException(s.fileName() + ": wrote " + out.position() + " bytes, planned "
                    + s.fileSize());
        }
        try {
            out.finish();
        } catch (IOException e) {
            throw failure(s.fileName(), e);
        }
    }

    private void write(SequentialWriter out, MemorySegment bytes, String fileName) {
        try {
            out.write(bytes);
        } catch (IOException e) {
            throw failure(fileName, e);
        }
    }

    private Dequant4jException failure(String fileName, IOException e) {
        return new Dequant4jException(Kind.IO, dir.resolve(fileName), "write failed: " + e.getMessage()
                + (isNoSpace(e) ? " (disk full?)" : ""), e);
    }

    private static boolean isNoSpace(IOException e) {
        String m = String.valueOf(e.getMessage());
        return m.contains("No space left") || m.contains("Disk quota");
    }
}

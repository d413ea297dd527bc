package dev.dequant4j.internal.export;

import com.sun.nio.file.ExtendedOpenOption;
import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.Int8Tensor;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.StagedReads;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Reads the input of the next units ahead of the workers, in dispatch order, and drops the pages of the units they
 * are done with from the process.
 *
 * <p>From a cold page cache, workers reading a mapped checkpoint fault it in page by page and wait on the disk
 * instead of computing, with little read-ahead from the kernel since units are not read in file order. A reader
 * thread instead reads each upcoming unit's byte ranges ahead, up to {@code window} input bytes beyond the unit the
 * workers took last, so the disk streams while the workers compute and the writer writes:
 * <ul>
 * <li>ranges not in the page cache are read with direct I/O (O_DIRECT) into a staging ring of {@code window} bytes,
 *     and the worker that produces the unit reads them from there ({@link StagedReads}): the disk's DMA lands in
 *     memory the process reuses, so a cold export costs no more CPU than a warm one, where filling the page cache
 *     and faulting it into the mapping cost several CPU-seconds per GB on the VMs we measured (docs/BENCHMARKS.md);
 * <li>where direct I/O is refused (tmpfs, some network file systems) or a unit's ranges do not fit the ring, the
 *     ranges are read into the page cache with large positional reads ({@link TensorStore.Ref#prefetch};
 *     {@link TensorStore.Ref#load} where a file cannot be opened) and the worker reads the mapping;
 * <li>ranges already in the page cache are left to the mapping, so a warm export reads no byte twice.
 * </ul>
 * A worker waits for its unit's ranges ({@link #awaitRead}) rather than faulting them in itself. Pages of a finished
 * unit are unmapped ({@link TensorStore.Ref#unload}), so the resident memory of an export is its buffers, the ring
 * and the units in work, not the part of the input read so far. All of it is advice: results do not depend on it,
 * and where the reader cannot read (a file truncated meanwhile, another OS) it stops and the workers read the
 * mapping themselves, which reports any failure.
 */
final class ReadAhead implements AutoCloseable {
    /** Bytes {@code [offset, offset + length)} of a stored tensor. */
    record Range(TensorStore.Ref ref, long offset, long length) {}

    /**
     * The ranges of one unit read into the ring, and its span {@code [start, end)} of the ring (in bytes ever
     * allocated); {@code complete} is false when a read failed and the unit was read into the page cache instead.
     */
    private record Staged(List<StagedReads.Piece> pieces, long start, long end, boolean complete) {}

    /** Bytes per read: large reads stream at the disk's speed and cost the kernel little per byte. */
    private static final int READ_BYTES = 8 << 20;
    /** Direct I/O reads whole blocks into block-aligned memory; 4 KiB suits every device we know. */
    private static final int ALIGN = 4096;

    /**
     * Test seam, false outside tests: stage ranges that are in the page cache too, as a cold input's would be (a test
     * cannot drop the page cache).
     */
    static volatile boolean stageCached;

    private final List<List<Range>> ranges;
    private final long[] before;
    private final long window;
    private final Staged[] staged;
    private final boolean[] finished;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition moved = lock.newCondition();
    private final Condition advanced = lock.newCondition();
    private final Thread thread;
    /** Holds the staging ring, allocated when the first unit needs it (a warm export never does). */
    private final Arena ring = Arena.ofShared();
    private MemorySegment memory;
    private int taken;
    /** Units {@code [0, read)} in dispatch order have been read ahead. */
    private int read;
    /** The reader has ended (all read, or it could not read): nobody waits for it any more. */
    private boolean stopped;
    private boolean closed;
    /** Ring bytes allocated and released so far; the ring holds {@code [released, allocated)}. */
    private long allocated;
    private long released;
    /** Units before this one in dispatch order have given their ring span back. */
    private int oldest;

    /**
     * @param plan   the export's plan; units are read in its dispatch order
     * @param window input bytes read at most beyond the last unit taken by a worker, and the staging ring's size
     */
    ReadAhead(ExportPlan plan, long window) {
        List<ExportPlan.Unit> order = plan.dispatch();
        this.ranges = new ArrayList<>(order.size());
        this.before = new long[order.size() + 1];
        for (int i = 0; i < order.size(); i++) {
            ExportPlan.Unit u = order.get(i);
            List<Range> r = ranges(plan.tensors().get(u.tensorIndex()), u);
            ranges.add(r);
            long bytes = 0;
            for (Range x : r) {
                bytes += x.length();
            }
            before[i + 1] = before[i] + bytes;
        }
        this.window = window;
        this.staged = new Staged[order.size()];
        this.finished = new boolean[order.size()];
        this.thread = Thread.ofPlatform().daemon().name("dequant4j-readahead").unstarted(this::run);
    }

    /**
     * The window for a memory budget of which {@code poolBytes} go to the unit buffers: half of the rest, so the
     * staging ring and pages loaded but not yet unmapped stay within the budget, and at least 4 MiB, at most
     * 256 MiB (at a few hundred MB/s to a few GB/s, enough to keep a disk streaming while the workers and the writer
     * take their turns).
     */
    static long window(long budget, long poolBytes) {
        return Math.clamp((budget - poolBytes) / 2, 4L << 20, 256L << 20);
    }

    void start() {
        thread.start();
    }

    /** A worker took the unit at dispatch position {@code position}: the window moves past it. */
    void taken(int position) {
        lock.lock();
        try {
            if (position + 1 > taken) {
                taken = position + 1;
                moved.signalAll();
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * Waits until the reader has read the unit at dispatch position {@code position} ahead, or has stopped; returns
     * the pieces of it staged in memory, for {@link StagedReads#set} (empty where the mapping is to be read).
     */
    List<StagedReads.Piece> awaitRead(int position) throws InterruptedException {
        lock.lock();
        try {
            while (!stopped && read <= position) {
                advanced.await();
            }
            Staged s = position < staged.length ? staged[position] : null;
            return s == null || !s.complete() ? List.of() : s.pieces();
        } finally {
            lock.unlock();
        }
    }

    /**
     * A worker has read all it needs of the unit at dispatch position {@code position}: its pages leave the process
     * and its span of the ring is free once every unit before it is done too.
     */
    void done(int position) {
        if (position >= ranges.size()) {
            return;
        }
        for (Range r : ranges.get(position)) {
            r.ref().unload(r.offset(), r.length());
        }
        lock.lock();
        try {
            finished[position] = true;
            while (oldest < finished.length && finished[oldest]) {
                Staged s = staged[oldest];
                if (s != null) {
                    released = Math.max(released, s.end());
                    staged[oldest] = null;
                }
                oldest++;
            }
            moved.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Stops the reader and waits for it, so nothing touches the mapping or the ring once the checkpoint may be
     * closed; the caller has joined the workers.
     */
    @Override
    public void close() {
        lock.lock();
        try {
            closed = true;
            moved.signalAll();
        } finally {
            lock.unlock();
        }
        if (thread.isAlive()) {
            boolean interrupted = false;
            while (true) {
                try {
                    thread.join();
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
        ring.close();
    }

    private void run() {
        Map<SafetensorsFile, FileChannel> buffered = new HashMap<>();
        Map<SafetensorsFile, FileChannel> direct = new HashMap<>();
        try (Arena scratchArena = Arena.ofConfined()) {
            ByteBuffer scratch = scratchArena.allocate(READ_BYTES, ALIGN).asByteBuffer();
            readAhead(buffered, direct, scratch);
        } finally {
            closeAll(buffered);
            closeAll(direct);
            lock.lock();
            try {
                stopped = true;
                advanced.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    private void readAhead(Map<SafetensorsFile, FileChannel> buffered, Map<SafetensorsFile, FileChannel> direct,
                           ByteBuffer scratch) {
        for (int next = 0; next < ranges.size(); next++) {
            lock.lock();
            try {
                // A unit far ahead would use memory long before it is needed. The first unit past the last one
                // taken is always allowed, whatever its size: a worker waits for it.
                while (!closed && next > taken && before[next] - before[taken] >= window) {
                    moved.awaitUninterruptibly();
                }
                if (closed) {
                    return;
                }
            } finally {
                lock.unlock();
            }
            Staged s = stage(next, direct);
            if ((s == null || !s.complete()) && !prefetch(ranges.get(next), buffered, scratch)) {
                return;
            }
            lock.lock();
            try {
                staged[next] = s;
                read = next + 1;
                advanced.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Reads the uncached ranges of unit {@code next} into the ring with direct I/O, waiting for room; null when they
     * cannot be (no direct I/O on a file, more than the ring holds), incomplete when a read failed: the caller then
     * prefetches them into the page cache.
     */
    private Staged stage(int next, Map<SafetensorsFile, FileChannel> direct) {
        List<Range> todo = new ArrayList<>();
        long need = 0;
        for (Range r : ranges.get(next)) {
            if (r.length() > 0 && (stageCached || !r.ref().isCached(r.offset(), r.length()))) {
                // a file that refuses direct I/O is remembered (as null), not tried again for every unit
                if (!direct.containsKey(r.ref().file())) {
                    direct.put(r.ref().file(), openDirect(r.ref().file()));
                }
                if (direct.get(r.ref().file()) == null) {
                    return null;
                }
                todo.add(r);
                need += span(r);
            }
        }
        long start = reserve(need);
        if (start < 0) {
            return null;
        }
        List<StagedReads.Piece> pieces = new ArrayList<>(todo.size());
        long at = todo.isEmpty() ? 0 : start % memory.byteSize();
        for (Range r : todo) {
            MemorySegment bytes = readDirect(r, direct.get(r.ref().file()), memory.asSlice(at, span(r)));
            if (bytes == null) {
                return new Staged(List.of(), start, start + need, false);
            }
            pieces.add(new StagedReads.Piece(r.ref(), r.offset(), bytes));
            at += span(r);
        }
        return new Staged(pieces, start, start + need, true);
    }

    /**
     * Reserves {@code need} contiguous ring bytes for the next unit, waiting until the units before it give theirs
     * back; returns the start (in bytes ever allocated), or -1 when it cannot fit or the reader is closed.
     */
    private long reserve(long need) {
        long size = ringBytes(window);
        if (need > size) {
            return -1;
        }
        lock.lock();
        try {
            if (memory == null && need > 0) {
                memory = ring.allocate(size, ALIGN);
            }
            while (!closed) {
                if (released == allocated) {
                    // empty: start again at the ring's beginning, so a span that did not fit its end fits now
                    allocated = released = Math.ceilDiv(allocated, size) * size;
                }
                long start = allocated;
                if (need > size - start % size) {
                    start += size - start % size;
                }
                if (start + need - released <= size) {
                    allocated = start + need;
                    return start;
                }
                moved.awaitUninterruptibly();
            }
            return -1;
        } finally {
            lock.unlock();
        }
    }

    /**
     * The staging ring's size: a quarter of the window, at least 4 MiB, at most 64 MiB. Some tens of MB keep a disk
     * streaming (64 MiB is 40 ms at 1.6 GB/s) and hold a few units' inputs, the rest of the window is left to the
     * page cache read-ahead that units too large for the ring fall back to.
     */
    static long ringBytes(long window) {
        return Math.clamp(window / 4, 4L << 20, 64L << 20) & -ALIGN;
    }

    /** Ring bytes a range takes: its file bytes widened to whole blocks at both ends. */
    private static long span(Range r) {
        long pos = position(r);
        return alignUp(pos + r.length()) - (pos & -ALIGN);
    }

    private static long position(Range r) {
        return r.ref().file().dataStart() + r.ref().entry().begin() + r.offset();
    }

    private static long alignUp(long v) {
        return (v + ALIGN - 1) & -ALIGN;
    }

    /** Reads range {@code r} by whole blocks into {@code dst}; returns the slice holding its bytes, or null. */
    private static MemorySegment readDirect(Range r, FileChannel ch, MemorySegment dst) {
        long pos = position(r);
        long from = pos & -ALIGN;
        try {
            if (r.ref().file().currentSize() < r.ref().file().fileSize()) {
                return null;
            }
            long done = 0;
            long want = pos + r.length() - from;
            while (done < want) {
                ByteBuffer bb = dst.asSlice(done, Math.min(READ_BYTES, dst.byteSize() - done)).asByteBuffer();
                int n = ch.read(bb, from + done);
                if (n <= 0) {
                    return null;
                }
                done += n;
            }
            return dst.asSlice(pos - from, r.length());
        } catch (IOException | IllegalStateException | UnsupportedOperationException e) {
            return null;
        }
    }

    /** Reads a unit's ranges into the page cache; false when the reader must stop. */
    private static boolean prefetch(List<Range> unit, Map<SafetensorsFile, FileChannel> buffered,
                                    ByteBuffer scratch) {
        for (Range r : unit) {
            FileChannel ch = buffered.computeIfAbsent(r.ref().file(), ReadAhead::open);
            boolean fetched = ch != null ? r.ref().prefetch(r.offset(), r.length(), ch, scratch)
                    : r.ref().load(r.offset(), r.length());
            if (!fetched) {
                return false;
            }
        }
        return true;
    }

    /** A channel to read {@code f} ahead through, or null (then its mapping is loaded instead). */
    private static FileChannel open(SafetensorsFile f) {
        try {
            return FileChannel.open(f.path(), StandardOpenOption.READ);
        } catch (IOException | UnsupportedOperationException e) {
            return null;
        }
    }

    /**
     * A direct-I/O channel on {@code f}, or null where the file system refuses direct I/O. Opened by path, so the
     * path must name the mapped file before and after the open: a path replaced since (a download finished, even
     * with a file of the same size) is not read, and the units come from the mapping instead.
     */
    private static FileChannel openDirect(SafetensorsFile f) {
        if (!SequentialWriter.directByDefault()) {
            return null;
        }
        FileChannel ch = null;
        try {
            if (!f.pathNamesMappedFile()) {
                return null;
            }
            ch = FileChannel.open(f.path(), StandardOpenOption.READ, ExtendedOpenOption.DIRECT);
            if (!f.pathNamesMappedFile() || ch.size() != f.fileSize()) {
                ch.close();
                return null;
            }
            return ch;
        } catch (IOException | UnsupportedOperationException e) {
            if (ch != null) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // read-only
                }
            }
            return null;
        }
    }

    private static void closeAll(Map<SafetensorsFile, FileChannel> channels) {
        for (FileChannel ch : channels.values()) {
            if (ch != null) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // read-only, and only read ahead: nothing to lose
                }
            }
        }
    }

    /** The stored bytes that producing {@code u} reads. */
    static List<Range> ranges(ExportPlan.OutputTensor t, ExportPlan.Unit u) {
        LogicalTensor s = t.source();
        if (t.raw()) {
            return List.of(new Range(((PlainTensor) s).ref(), u.start(), u.count()));
        }
        long start = u.start();
        long end = Math.min(u.start() + u.count(), s.numel());
        if (t.transpose() || t.onDevice()) {
            start = 0;
            end = s.numel();
        }
        if (end <= start) {
            return List.of();
        }
        return switch (s) {
            case PlainTensor p -> {
                long bits = p.ref().entry().dtype().bits();
                long from = start * bits / 8;
                yield List.of(new Range(p.ref(), from, (end * bits + 7) / 8 - from));
            }
            case FourBitTensor f -> {
                int shift = f.state().blockShift();
                long b0 = start >>> shift;
                long b1 = ((end - 1) >>> shift) + 1;
                long scale = f.doubleQuant() ? 1 : f.absmax().entry().dtype().bits() / 8;
                yield List.of(new Range(f.weight(), start >>> 1, ((end - 1) >>> 1) + 1 - (start >>> 1)),
                        new Range(f.absmax(), b0 * scale, (b1 - b0) * scale));
            }
            case Int8Tensor i -> List.of(new Range(i.weight(), start, end - start));
        };
    }
}

package dev.dequant4j.internal.export;

import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.Int8Tensor;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.lang.foreign.Arena;
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
 * thread instead reads each upcoming unit's byte ranges whole into the page cache with large positional reads
 * ({@link TensorStore.Ref#prefetch}; {@link TensorStore.Ref#load} where a file cannot be opened), up to
 * {@code window} input bytes beyond the unit the workers took last, so the disk streams while the workers compute
 * and the writer writes. Pages of a finished unit are unmapped ({@link TensorStore.Ref#unload}), so the resident
 * memory of an export is its buffers and the units in work, not the part of the input read so far. Both are
 * advice: results do not depend on them, and where they do nothing (a file that is not mapped, another OS) the
 * workers simply read the mapping themselves.
 */
final class ReadAhead implements AutoCloseable {
    /** Bytes {@code [offset, offset + length)} of a stored tensor. */
    record Range(TensorStore.Ref ref, long offset, long length) {}

    /** Bytes per read: large reads stream at the disk's speed and cost the kernel little per byte. */
    private static final int READ_BYTES = 8 << 20;

    private final List<List<Range>> ranges;
    private final long[] before;
    private final long window;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition moved = lock.newCondition();
    private final Thread thread;
    private int taken;
    private boolean closed;

    /**
     * @param plan   the export's plan; units are loaded in its dispatch order
     * @param window input bytes loaded at most beyond the last unit taken by a worker
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
        this.thread = Thread.ofPlatform().daemon().name("dequant4j-readahead").unstarted(this::run);
    }

    /**
     * The window for a memory budget of which {@code poolBytes} go to the unit buffers: half of the rest, so pages
     * loaded but not yet unmapped stay within the budget, and at least 4 MiB, at most 256 MiB (at a few hundred MB/s
     * to a few GB/s, enough to keep a disk streaming while the workers and the writer take their turns).
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

    /** A worker has read all it needs of the unit at dispatch position {@code position}. */
    void done(int position) {
        if (position < ranges.size()) {
            for (Range r : ranges.get(position)) {
                r.ref().unload(r.offset(), r.length());
            }
        }
    }

    /** Stops the reader and waits for it, so nothing touches the mapping once the checkpoint may be closed. */
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
    }

    private void run() {
        Map<SafetensorsFile, FileChannel> channels = new HashMap<>();
        try (Arena arena = Arena.ofConfined()) {
            ByteBuffer scratch = arena.allocate(READ_BYTES, 4096).asByteBuffer();
            readAhead(channels, scratch);
        } finally {
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
    }

    private void readAhead(Map<SafetensorsFile, FileChannel> channels, ByteBuffer scratch) {
        int next = 0;
        while (next < ranges.size()) {
            lock.lock();
            try {
                // The unit a worker took is being read already; a unit far ahead would use memory long before it
                // is needed. The first unit past the last one taken is always allowed, whatever its size.
                while (!closed && next > taken && before[next] - before[taken] >= window) {
                    moved.awaitUninterruptibly();
                }
                if (closed) {
                    return;
                }
                next = Math.max(next, taken);
            } finally {
                lock.unlock();
            }
            if (next >= ranges.size()) {
                return;
            }
            for (Range r : ranges.get(next)) {
                FileChannel ch = channels.computeIfAbsent(r.ref().file(), ReadAhead::open);
                boolean read = ch != null ? r.ref().prefetch(r.offset(), r.length(), ch, scratch)
                        : r.ref().load(r.offset(), r.length());
                if (!read) {
                    return;
                }
            }
            next++;
        }
    }

    /** A channel to read {@code f} ahead through, or null (then its mapping is loaded instead). */
    private static FileChannel open(SafetensorsFile f) {
        try {
            return FileChannel.open(f.path(), StandardOpenOption.READ);
        } catch (IOException | UnsupportedOperationException e) {
            return null;
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

package dev.dequant4j.internal.safetensors;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The stored tensors of one checkpoint, across one file or the shards of an index, looked up by name. All files are
 * mapped in one shared arena, so any thread may read and {@link #close()} releases everything at once.
 */
public final class TensorStore implements AutoCloseable {
    /** A stored tensor and the file that holds it. */
    public record Ref(SafetensorsFile file, TensorEntry entry) {
        public MemorySegment data() {
            return file.data(entry);
        }

        public String name() {
            return entry.name();
        }

        public Path path() {
            return file.path();
        }

        /** Copies {@code len} bytes from byte {@code offset} of this tensor. */
        public void copyBytes(long offset, byte[] dst, int dstOff, int len) {
            MemorySegment src = source(offset, len);
            try {
                MemorySegment.copy(src, ValueLayout.JAVA_BYTE, 0, dst, dstOff, len);
            } catch (IllegalStateException | InternalError e) {
                throw readFailure(e);
            }
        }

        /** Copies {@code len} bytes from byte {@code offset} of this tensor into {@code dst} at {@code dstOffset}. */
        public void copyTo(long offset, MemorySegment dst, long dstOffset, long len) {
            MemorySegment src = source(offset, len);
            try {
                MemorySegment.copy(src, 0, dst, dstOffset, len);
            } catch (IllegalStateException | InternalError e) {
                throw readFailure(e);
            }
        }

        /** Copies {@code n} little-endian 16-bit values starting at byte {@code offset}. */
        public void copyShorts(long offset, short[] dst, int dstOff, int n) {
            MemorySegment src = source(offset, 2L * n);
            try {
                MemorySegment.copy(src, SHORT_LE, 0, dst, dstOff, n);
            } catch (IllegalStateException | InternalError e) {
                throw readFailure(e);
            }
        }

        /** Copies {@code n} little-endian floats starting at byte {@code offset}. */
        public void copyFloats(long offset, float[] dst, int dstOff, int n) {
            MemorySegment src = source(offset, 4L * n);
            try {
                MemorySegment.copy(src, FLOAT_LE, 0, dst, dstOff, n);
            } catch (IllegalStateException | InternalError e) {
                throw readFailure(e);
            }
        }

        /** Copies {@code n} little-endian doubles starting at byte {@code offset}. */
        public void copyDoubles(long offset, double[] dst, int dstOff, int n) {
            MemorySegment src = source(offset, 8L * n);
            try {
                MemorySegment.copy(src, DOUBLE_LE, 0, dst, dstOff, n);
            } catch (IllegalStateException | InternalError e) {
                throw readFailure(e);
            }
        }

        /**
         * Brings bytes {@code [offset, offset + len)} of this tensor into memory ahead of their reads: the OS is told
         * to read the whole range at once ({@code madvise(MADV_WILLNEED)}), then one byte per page is touched, so a
         * cold range is read at the disk's sequential speed by the caller instead of page by page by the readers.
         * Advisory: returns false, having done nothing or part of it, when the bytes cannot be read (the file was
         * truncated, the checkpoint closed); the reads themselves then report why.
         */
        public boolean load(long offset, long len) {
            MemorySegment s = advisable(offset, len);
            if (s == null) {
                return false;
            }
            try {
                if (file.currentSize() < file.fileSize()) {
                    return false;
                }
                s.load();
                return true;
            } catch (java.io.IOException | IllegalStateException | InternalError e) {
                return false;
            }
        }

        /**
         * Reads bytes {@code [offset, offset + len)} of this tensor into the page cache ahead of their reads, unless
         * they are there already ({@code mincore}): positional reads of {@code scratch}'s size through
         * {@code channel}, a channel open on this tensor's file. Unlike {@link #load}, nothing is mapped into the
         * process, so bytes read ahead do not count in its resident memory until a reader touches them, and large
         * reads cost the kernel less than faulting a mapping in. Advisory, like {@link #load}.
         */
        public boolean prefetch(long offset, long len, FileChannel channel, ByteBuffer scratch) {
            MemorySegment s = advisable(offset, len);
            if (s == null) {
                return false;
            }
            try {
                if (file.currentSize() < file.fileSize()) {
                    return false;
                }
                if (s.isLoaded()) {
                    return true;
                }
                long pos = file.dataStart() + entry.begin() + Math.clamp(offset, 0, entry.byteSize());
                long end = pos + s.byteSize();
                while (pos < end) {
                    scratch.clear().limit((int) Math.min(scratch.capacity(), end - pos));
                    int n = channel.read(scratch, pos);
                    if (n <= 0) {
                        return false;
                    }
                    pos += n;
                }
                return true;
            } catch (java.io.IOException | IllegalStateException | java.io.UncheckedIOException e) {
                return false;
            }
        }

        /**
         * Lets the OS unmap this process's pages of bytes {@code [offset, offset + len)} ({@code MADV_DONTNEED}; on a
         * read-only file mapping the data stays in the page cache and a later read maps it again): pages already read
         * then no longer count in the resident memory of the process. Advisory, like {@link #load}.
         */
        public void unload(long offset, long len) {
            MemorySegment s = advisable(offset, len);
            if (s == null) {
                return;
            }
            try {
                s.unload();
            } catch (IllegalStateException | java.io.UncheckedIOException e) {
                // closed meanwhile: nothing left to unload
            }
        }

        /** The mapped slice for an advisory call, or null when there is nothing to advise on. */
        private MemorySegment advisable(long offset, long len) {
            long from = Math.clamp(offset, 0, entry.byteSize());
            long to = Math.clamp(offset + len, from, entry.byteSize());
            if (to == from) {
                return null;
            }
            try {
                MemorySegment s = file.data(entry);
                return s.isMapped() ? s.asSlice(from, to - from) : null;
            } catch (IllegalStateException e) {
                return null;
            }
        }

        /** All bytes of this tensor (which must be small enough for an array). */
        public byte[] bytes() {
            long size = entry.byteSize();
            if (size > Integer.MAX_VALUE - 8) {
                throw new Dequant4jException(Kind.INVALID_REQUEST, file.path(), entry.name(), "too large to read into one array");
            }
            byte[] b = new byte[(int) size];
            copyBytes(0, b, 0, b.length);
            return b;
        }

        /**
         * Bytes {@code [offset, offset + len)} of this tensor: staged in memory by this thread ({@link StagedReads}),
         * else the checked mapping ({@link #guard}).
         */
        private MemorySegment source(long offset, long len) {
            MemorySegment staged = StagedReads.find(this, offset, len);
            return staged != null ? staged : guard(offset, len).asSlice(offset, len);
        }

        /** Whether bytes {@code [offset, offset + len)} of this tensor are all in the page cache ({@code mincore}). */
        public boolean isCached(long offset, long len) {
            MemorySegment s = advisable(offset, len);
            try {
                return s != null && s.isLoaded();
            } catch (IllegalStateException | java.io.UncheckedIOException e) {
                return false;
            }
        }

        /**
         * The tensor's bytes, after checking that the file still has the size it had when it was mapped: reading
         * a mapped page past the end of a file that shrank would fault.
         */
        private MemorySegment guard(long offset, long len) {
            if (offset < 0 || len < 0 || offset + len > entry.byteSize()) {
                throw new IndexOutOfBoundsException("read of " + len + " bytes at " + offset + " outside "
                        + entry.name() + " (" + entry.byteSize() + " bytes)");
            }
            try {
                if (file.currentSize() < file.fileSize()) {
                    throw new Dequant4jException(Kind.CORRUPT_INPUT, file.path(), entry.name(), "file was truncated after it was opened ("
                            + file.currentSize() + " bytes now, " + file.fileSize() + " before)");
                }
                return file.data(entry);
            } catch (java.io.IOException | IllegalStateException e) {
                throw readFailure(e);
            }
        }

        private Dequant4jException readFailure(Throwable e) {
            if (e instanceof IllegalStateException) {
                return new Dequant4jException(Kind.INVALID_REQUEST, file.path(), entry.name(), "checkpoint is closed", e);
            }
            return new Dequant4jException(Kind.IO, file.path(), entry.name(),
                    "read failed (file changed or truncated while open?): " + e, e);
        }
    }

    private static final ValueLayout.OfShort SHORT_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat FLOAT_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble DOUBLE_LE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Tensors closer than this are read in one positional read: bitsandbytes stores a weight's side by side. */
    private static final long PREFETCH_GAP_BYTES = 64 << 10;
    private static final long PREFETCH_RUN_BYTES = 8 << 20;

    private final Arena arena;
    private final List<SafetensorsFile> files;
    private final Map<String, Ref> refs;
    private final ShardIndex index;

    private TensorStore(Arena arena, List<SafetensorsFile> files, Map<String, Ref> refs, ShardIndex index) {
        this.arena = arena;
        this.files = files;
        this.refs = refs;
        this.index = index;
    }

    /** One safetensors file. */
    public static TensorStore openFile(Path file) {
        Arena arena = Arena.ofShared();
        try {
            SafetensorsFile f = SafetensorsFile.open(file, arena);
            Map<String, Ref> refs = new LinkedHashMap<>();
            for (TensorEntry e : f.tensors().values()) {
                refs.put(e.name(), new Ref(f, e));
            }
            return new TensorStore(arena, List.of(f), Collections.unmodifiableMap(refs), null);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /**
     * The shards named by an index. Every tensor of the index must be in its shard, and every tensor of a shard
     * must be in the index and mapped to that shard.
     */
    public static TensorStore openSharded(Path indexFile) {
        ShardIndex index = ShardIndex.read(indexFile);
        Path dir = indexFile.toAbsolutePath().getParent();
        Arena arena = Arena.ofShared();
        List<SafetensorsFile> files = new ArrayList<>();
        try {
            Map<String, SafetensorsFile> byShard = new LinkedHashMap<>();
            for (String shard : index.shardNames()) {
                SafetensorsFile f = SafetensorsFile.open(dir.resolve(shard), arena);
                files.add(f);
                byShard.put(shard, f);
            }
            checkAgreement(index, byShard);
            Map<String, Ref> refs = new LinkedHashMap<>();
            for (Map.Entry<String, String> e : index.weightMap().entrySet()) {
                SafetensorsFile f = byShard.get(e.getValue());
                refs.put(e.getKey(), new Ref(f, f.get(e.getKey())));
            }
            return new TensorStore(arena, Collections.unmodifiableList(files), Collections.unmodifiableMap(refs),
                    index);
        } catch (RuntimeException e) {
            for (SafetensorsFile f : files) {
                f.close();
            }
            arena.close();
            throw e;
        }
    }

    /**
     * Checks that an index and the headers of its shards ({@code byShard}, by shard name) agree: every tensor of the
     * index is in its shard, and every tensor of a shard is in the index and mapped to that shard.
     */
    public static void checkAgreement(ShardIndex index, Map<String, SafetensorsFile> byShard) {
        for (Map.Entry<String, String> e : index.weightMap().entrySet()) {
            if (byShard.get(e.getValue()).get(e.getKey()) == null) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, index.file(), e.getKey(),
                        "listed in the index under " + e.getValue() + ", but that shard does not contain it");
            }
        }
        for (Map.Entry<String, SafetensorsFile> s : byShard.entrySet()) {
            for (TensorEntry entry : s.getValue().tensors().values()) {
                String mapped = index.weightMap().get(entry.name());
                if (mapped == null) {
                    throw new Dequant4jException(Kind.CORRUPT_INPUT, s.getValue().path(), entry.name(),
                            "is in this shard but not in " + ShardIndex.FILE_NAME);
                }
                if (!mapped.equals(s.getKey())) {
                    throw new Dequant4jException(Kind.CORRUPT_INPUT, s.getValue().path(), entry.name(),
                            "is in this shard but the index maps it to " + mapped);
                }
            }
        }
    }

    /**
     * Reads the bytes of {@code tensors}, small ones scattered through the files, into the page cache with a few
     * positional reads before they are read through the mapping. Opening a bitsandbytes checkpoint reads each 4-bit
     * weight's quant state, maps and nested absmax, a few KB; from a cold cache each of them would otherwise cost a
     * page fault that reads the kernel's whole read-around window: 1.46 GB of a 5.7 GB Llama-3-8B checkpoint read
     * to open it. Advisory, see {@link SafetensorsFile#prefetch}.
     */
    public void prefetch(java.util.Collection<Ref> tensors) {
        Map<SafetensorsFile, List<TensorEntry>> byFile = new LinkedHashMap<>();
        for (Ref r : tensors) {
            byFile.computeIfAbsent(r.file(), f -> new ArrayList<>()).add(r.entry());
        }
        byFile.forEach((f, entries) -> f.prefetch(entries, PREFETCH_GAP_BYTES, PREFETCH_RUN_BYTES));
    }

    /**
     * Unmaps from this process the pages around {@code tensors}, small ones read once (see {@link #prefetch}), in
     * whole huge pages: where the page cache holds a file in large folios, one read maps a whole folio, up to 2 MiB,
     * into the resident memory of the process. The data stays in the page cache; a later read maps it again.
     */
    public void unmap(java.util.Collection<Ref> tensors) {
        for (Ref r : tensors) {
            long start = r.file().dataStart() + r.entry().begin();
            r.file().unmapAround(start, start + r.entry().byteSize());
        }
    }

    public Map<String, Ref> refs() {
        return refs;
    }

    public Ref get(String name) {
        return refs.get(name);
    }

    public List<SafetensorsFile> files() {
        return files;
    }

    /** The index, for a sharded checkpoint. */
    public ShardIndex index() {
        return index;
    }

    public Arena arena() {
        return arena;
    }

    @Override
    public void close() {
        for (SafetensorsFile f : files) {
            f.close();
        }
        arena.close();
    }
}

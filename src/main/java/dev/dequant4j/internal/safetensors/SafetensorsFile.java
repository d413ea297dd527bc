package dev.dequant4j.internal.safetensors;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.HeapBudget;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonReader;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A safetensors file mapped once into memory, with its header validated as the safetensors library does
 * ({@code Metadata::validate}): the header length fits the file and the 100 MB limit, the header is a JSON object
 * that starts with '{', metadata values are strings, every shape's element count fits 64 bits and matches its byte
 * range, and the byte ranges tile the data section exactly, with no hole, no overlap and nothing after the last one.
 *
 * <p>Opening costs time proportional to the header, not the data: the data stays in the page cache, and
 * {@link #data(TensorEntry)} returns zero-copy slices of the mapping.
 */
public final class SafetensorsFile implements AutoCloseable {
    /** The safetensors library's {@code MAX_HEADER_SIZE}. */
    public static final long MAX_HEADER_BYTES = 100_000_000L;
    /** PyTorch's and NumPy's limit on the number of dimensions. */
    public static final int MAX_RANK = 64;

    private static final long HUGE_PAGE = 2L << 20;
    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);

    private final Path path;
    private final Arena arena;
    private final boolean ownsArena;
    /** Identity of the mapped file (device and inode on Unix), to tell a truncation from a replacement. */
    private final Object fileKey;
    private final MemorySegment mapping;
    private final long fileSize;
    private final long dataStart;
    private final Map<String, String> metadata;
    private final Map<String, TensorEntry> tensors;

    private SafetensorsFile(Path path, Arena arena, boolean ownsArena, Object fileKey, MemorySegment mapping,
                            long fileSize, long dataStart, Map<String, String> metadata,
                            Map<String, TensorEntry> tensors) {
        this.path = path;
        this.arena = arena;
        this.ownsArena = ownsArena;
        this.fileKey = fileKey;
        this.mapping = mapping;
        this.fileSize = fileSize;
        this.dataStart = dataStart;
        this.metadata = metadata;
        this.tensors = tensors;
    }

    /** Opens and validates a file with its own arena, released by {@link #close()}. */
    public static SafetensorsFile open(Path path) {
        Arena arena = Arena.ofShared();
        try {
            return open(path, arena, true);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Opens and validates a file whose mapping lives in {@code arena}, which the caller closes. */
    public static SafetensorsFile open(Path path, Arena arena) {
        return open(path, arena, false);
    }

    private static SafetensorsFile open(Path path, Arena arena, boolean ownsArena) {
        InputFiles.requireRegular(path);
        long size;
        MemorySegment map;
        Object fileKey;
        // The channel is needed only to map: the mapping outlives it, and keeping it open would let one
        // interrupted reader (FileChannel is interruptible) close it under every other reader.
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            fileKey = Files.readAttributes(path, BasicFileAttributes.class).fileKey();
            size = ch.size();
            map = size == 0 ? MemorySegment.NULL : ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            readHeaderThrough(ch, size);
        } catch (NoSuchFileException e) {
            throw new Dequant4jException(Kind.IO, path, "no such file");
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, path, "cannot open: " + (e.getMessage() != null ? e.getMessage() : e), e);
        }
        SafetensorsFile f = parse(path, arena, ownsArena, fileKey, map, size);
        f.unmapAround(0, f.dataStart);
        return f;
    }

    /**
     * Reads the length prefix and the header through {@code ch} into the page cache before {@link #parse} reads them
     * through the mapping: a cold mapping's first touch is a page fault that reads the kernel's read-around window
     * (read_ahead_kb, 8 MiB on the disks we measured) of the tensors after the header as well. Lengths that parse
     * will refuse are not followed.
     */
    private static void readHeaderThrough(FileChannel ch, long size) throws IOException {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate((int) Math.min(size, 1 << 16))
                .order(java.nio.ByteOrder.LITTLE_ENDIAN);
        if (ch.read(b, 0) < 8) {
            return;
        }
        long end = 8 + b.getLong(0);
        if (end < 8 || end > Math.min(size, 8 + MAX_HEADER_BYTES)) {
            return;
        }
        readThrough(ch, b.position(), end, b);
    }

    /**
     * Validates a whole file held in memory, exactly as {@link #open} validates a mapped one; {@code name} is used in
     * messages only. The fuzz tests use it to run millions of headers without touching the file system.
     */
    public static SafetensorsFile parse(Path name, byte[] contents) {
        return parse(name, Arena.global(), false, null, MemorySegment.ofArray(contents), contents.length);
    }

    private static SafetensorsFile parse(Path path, Arena arena, boolean ownsArena, Object fileKey, MemorySegment map,
                                         long size) {
        checkNotAPointerOrPage(path, map, size);
        if (size < 8) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "file is " + size + " bytes, too small to be safetensors (truncated?)");
        }
        long n = map.get(U64_LE, 0);
        if (n < 0 || n > MAX_HEADER_BYTES) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "header length " + Long.toUnsignedString(n)
                    + " exceeds the safetensors limit of " + MAX_HEADER_BYTES + " bytes (corrupt or not safetensors)");
        }
        if (n > size - 8) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "header length " + n + " runs past the end of the file ("
                    + size + " bytes; truncated download?)");
        }
        if (n == 0 || map.get(ValueLayout.JAVA_BYTE, 8) != '{') {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "header does not start with '{' (not a safetensors file?)");
        }
        HeapBudget.require(path, "its " + n + "-byte header", HeapBudget.PER_HEADER_BYTE * n);
        byte[] header = map.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
        long dataLen = size - 8 - n;

        Map<String, String> metadata = null;
        // sized for ~100 header bytes per tensor (typical), so a large header does not rehash its map many times
        Map<String, TensorEntry> tensors = LinkedHashMap.newLinkedHashMap((int) (n / 100));
        JsonReader r = new JsonReader(header, 0, header.length, 8, 8);
        String current = null;
        try {
            r.beginObject();
            while (r.hasNext()) {
                long at = r.offset();
                String name = topLevelName(path, r, tensors);
                if (name.equals("__metadata__")) {
                    if (metadata != null) {
                        throw duplicate(path, name, at, null);
                    }
                    metadata = readMetadata(r);
                    continue;
                }
                current = name;
                tensors.put(name, readEntry(path, r, name, dataLen));
                current = null;
            }
            r.endObject();
            r.endDocument();
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, current, "invalid header JSON: " + e.getMessage(), e);
        }
        checkTiling(path, tensors.values(), dataLen);
        return new SafetensorsFile(path, arena, ownsArena, fileKey, map, size, 8 + n,
                metadata == null ? Map.of() : metadata, Collections.unmodifiableMap(tensors));
    }

    /** The next key of the header object; a repeated one is a duplicate tensor name, reported as such. */
    private static String topLevelName(Path path, JsonReader r, Map<String, TensorEntry> tensors) {
        try {
            return r.nextName(tensors);
        } catch (JsonException e) {
            if (e.duplicateKey() == null) {
                throw e;
            }
            throw duplicate(path, e.duplicateKey(), e.offset(), e);
        }
    }

    private static Dequant4jException duplicate(Path path, String name, long offset, Throwable cause) {
        return new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "duplicate tensor name in the header (at byte " + offset + ")",
                cause);
    }

    /** Recognises the files most often mistaken for weights: Git LFS pointers and HTML error pages. */
    private static void checkNotAPointerOrPage(Path path, MemorySegment map, long size) {
        int probe = (int) Math.min(size, 64);
        if (probe == 0) {
            return;
        }
        String head = new String(map.asSlice(0, probe).toArray(ValueLayout.JAVA_BYTE), StandardCharsets.ISO_8859_1);
        if (head.startsWith("version https://git-lfs")) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "this is a Git LFS pointer, not the weights: run git lfs pull");
        }
        String lower = head.stripLeading().toLowerCase(java.util.Locale.ROOT);
        if (lower.startsWith("<!doctype html") || lower.startsWith("<html")) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, "this is an HTML page, not safetensors (a failed download?)");
        }
    }

    private static Map<String, String> readMetadata(JsonReader r) {
        if (r.peek() == JsonReader.Token.NULL) {
            r.nextNull();
            return Map.of();
        }
        if (r.peek() != JsonReader.Token.BEGIN_OBJECT) {
            throw r.error("__metadata__ must be an object of strings");
        }
        Map<String, String> m = new LinkedHashMap<>();
        r.beginObject();
        while (r.hasNext()) {
            String k = r.nextName();
            if (r.peek() != JsonReader.Token.STRING) {
                throw r.error("__metadata__ value for \"" + k + "\" must be a string");
            }
            m.put(k, r.nextString());
        }
        r.endObject();
        return Collections.unmodifiableMap(m);
    }

    private static TensorEntry readEntry(Path path, JsonReader r, String name, long dataLen) {
        if (r.peek() != JsonReader.Token.BEGIN_OBJECT) {
            throw r.error("tensor entry must be an object");
        }
        String dtypeName = null;
        long[] shape = null;
        long begin = -1;
        long end = -1;
        r.beginObject();
        while (r.hasNext()) {
            String k = r.nextName();
            switch (k) {
                case "dtype" -> {
                    if (r.peek() != JsonReader.Token.STRING) {
                        throw r.error("dtype must be a string");
                    }
                    dtypeName = r.nextString();
                }
                case "shape" -> shape = readShape(r);
                case "data_offsets" -> {
                    if (r.peek() != JsonReader.Token.BEGIN_ARRAY) {
                        throw r.error("data_offsets must be an array of two integers");
                    }
                    r.beginArray();
                    long[] o = new long[2];
                    int i = 0;
                    while (r.hasNext()) {
                        if (i == 2) {
                            throw r.error("data_offsets must have exactly two entries");
                        }
                        long v = r.nextLong();
                        if (v < 0) {
                            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "negative data offset " + v);
                        }
                        o[i++] = v;
                    }
                    r.endArray();
                    if (i != 2) {
                        throw r.error("data_offsets must have exactly two entries");
                    }
                    begin = o[0];
                    end = o[1];
                }
                default -> r.skipValue();
            }
        }
        r.endObject();
        if (dtypeName == null) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "header entry has no dtype");
        }
        if (shape == null) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "header entry has no shape");
        }
        if (begin < 0) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "header entry has no data_offsets");
        }
        String dn = dtypeName;
        DType dtype = DType.fromSafetensorsName(dtypeName).orElseThrow(() -> new Dequant4jException(Kind.CORRUPT_INPUT, path, name,
                "unknown dtype '" + Json.abbreviate(dn, 40) + "' (not one of the safetensors dtypes)"));
        long numel = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "negative dimension in shape " + Arrays.toString(shape));
            }
            try {
                numel = Math.multiplyExact(numel, d);
            } catch (ArithmeticException e) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name,
                        "shape " + Arrays.toString(shape) + " has more elements than fit in 64 bits");
            }
        }
        long bytes = dtype.byteSize(numel);
        if (bytes < 0) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "shape " + Arrays.toString(shape) + " of " + dtype
                    + " is not a whole number of bytes or overflows 64 bits");
        }
        if (end < begin) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "data_offsets [" + begin + ", " + end + "] end before they begin");
        }
        if (end > dataLen) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "data_offsets [" + begin + ", " + end
                    + "] run past the end of the file (data section is " + dataLen + " bytes; truncated?)");
        }
        if (end - begin != bytes) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, name, "data_offsets [" + begin + ", " + end + "] hold " + (end - begin)
                    + " bytes but " + dtype + Arrays.toString(shape) + " needs " + bytes);
        }
        return new TensorEntry(name, dtype, shape, begin, end);
    }

    private static long[] readShape(JsonReader r) {
        if (r.peek() != JsonReader.Token.BEGIN_ARRAY) {
            throw r.error("shape must be an array of integers");
        }
        r.beginArray();
        long[] dims = new long[4];
        int n = 0;
        while (r.hasNext()) {
            if (n == MAX_RANK) {
                throw r.error("shape has more than " + MAX_RANK + " dimensions");
            }
            if (n == dims.length) {
                dims = Arrays.copyOf(dims, n * 2);
            }
            dims[n++] = r.nextLong();
        }
        r.endArray();
        return Arrays.copyOf(dims, n);
    }

    private static void checkTiling(Path path, java.util.Collection<TensorEntry> entries, long dataLen) {
        List<TensorEntry> sorted = new ArrayList<>(entries);
        sorted.sort(Comparator.comparingLong(TensorEntry::begin).thenComparingLong(TensorEntry::end));
        long expected = 0;
        String previous = null;
        for (TensorEntry e : sorted) {
            if (e.begin() < expected) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, path, e.name(), "data_offsets [" + e.begin() + ", " + e.end()
                        + "] overlap tensor '" + previous + "' (which ends at " + expected + ")");
            }
            if (e.begin() > expected) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, path, e.name(), "hole of " + (e.begin() - expected)
                        + " bytes in the data section before this tensor (data_offsets start at " + e.begin() + ")");
            }
            expected = e.end();
            previous = e.name();
        }
        if (expected != dataLen) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, path, (dataLen - expected) + " trailing bytes after the last tensor "
                    + "(the data section is " + dataLen + " bytes, the tensors cover " + expected + ")");
        }
    }

    public Path path() {
        return path;
    }

    public long fileSize() {
        return fileSize;
    }

    /** File offset of the data section (8 + header length). */
    public long dataStart() {
        return dataStart;
    }

    /** The length prefix and header JSON (with its padding), as stored. */
    public byte[] headerBytes() {
        return mapping.asSlice(0, dataStart).toArray(ValueLayout.JAVA_BYTE);
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    /** Tensors in header order. */
    public Map<String, TensorEntry> tensors() {
        return tensors;
    }

    public TensorEntry get(String name) {
        return tensors.get(name);
    }

    /** Zero-copy, read-only view of a tensor's bytes. */
    public MemorySegment data(TensorEntry e) {
        return mapping.asSlice(dataStart + e.begin(), e.byteSize());
    }

    /**
     * Reads {@code entries}, tensors of this file, into the page cache with positional reads, one per run of
     * entries with gaps under {@code gap} bytes (of at most {@code maxRun} bytes), skipping runs cached already
     * ({@code mincore}). A cold mapping's first touch of a page is a fault that reads the kernel's read-around window
     * around it (read_ahead_kb: 8 MiB on the virtio disks we measured), where a positional read reads what it is
     * asked. Advisory: where the file cannot be read, or its path now names another file, nothing is done, and the
     * reads through the mapping report any failure.
     */
    public void prefetch(List<TensorEntry> entries, long gap, long maxRun) {
        if (!mapping.isMapped()) {
            return;
        }
        List<long[]> runs = runs(entries, gap, maxRun);
        if (runs.isEmpty()) {
            return;
        }
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ);
             Arena scratchArena = Arena.ofConfined()) {
            if (!pathNamesMappedFile()) {
                return;
            }
            java.nio.ByteBuffer scratch = scratchArena.allocate(Math.min(maxRun, 1 << 20)).asByteBuffer();
            for (long[] run : runs) {
                if (!mapping.asSlice(run[0], run[1] - run[0]).isLoaded()) {
                    readThrough(ch, run[0], run[1], scratch);
                }
            }
        } catch (IOException | IllegalStateException | java.io.UncheckedIOException e) {
            // advisory: the mapping's reads report why the file cannot be read
        }
    }

    /**
     * Unmaps from this process the pages of bytes {@code [from, to)} of the file, widened to whole 2 MiB huge pages
     * (the largest folio the page cache maps at once on x86-64 and arm64 with 4 KiB pages): {@code MADV_DONTNEED} on
     * part of a huge page would leave the rest of it mapped. For bytes read once, such as the header and the quant
     * states; the data stays in the page cache, and a later read maps it again. Advisory.
     */
    public void unmapAround(long from, long to) {
        if (!mapping.isMapped() || to <= from) {
            return;
        }
        long start = Math.max(0, from / HUGE_PAGE * HUGE_PAGE);
        long end = Math.min(fileSize, Math.ceilDiv(to, HUGE_PAGE) * HUGE_PAGE);
        try {
            mapping.asSlice(start, end - start).unload();
        } catch (IllegalStateException | java.io.UncheckedIOException e) {
            // closed meanwhile: nothing left mapped
        }
    }

    /** File ranges {@code [from, to)} covering {@code entries}, merged as {@link #prefetch} describes. */
    private List<long[]> runs(List<TensorEntry> entries, long gap, long maxRun) {
        List<TensorEntry> sorted = new ArrayList<>(entries);
        sorted.removeIf(e -> e.byteSize() == 0);
        sorted.sort(Comparator.comparingLong(TensorEntry::begin));
        List<long[]> runs = new ArrayList<>();
        for (TensorEntry e : sorted) {
            long from = dataStart + e.begin();
            long to = dataStart + e.end();
            long[] last = runs.isEmpty() ? null : runs.getLast();
            if (last != null && from - last[1] < gap && to - last[0] <= maxRun) {
                last[1] = Math.max(last[1], to);
            } else {
                runs.add(new long[] {from, to});
            }
        }
        return runs;
    }

    private static void readThrough(FileChannel ch, long from, long to, java.nio.ByteBuffer scratch)
            throws IOException {
        for (long pos = from; pos < to; ) {
            scratch.clear().limit((int) Math.min(scratch.capacity(), to - pos));
            int n = ch.read(scratch, pos);
            if (n <= 0) {
                return;
            }
            pos += n;
        }
    }

    /** The arena that owns the mapping. */
    public Arena arena() {
        return arena;
    }

    /**
     * The current size of the mapped file. A file that shrank after it was mapped cannot be read safely (reading a
     * page past the new end faults), so readers compare this with {@link #fileSize()} before copying. It is found
     * through the path: when the path is gone or now names another file (a download replaced it), the mapped file
     * was not truncated through it and keeps its size.
     */
    public long currentSize() throws IOException {
        BasicFileAttributes now;
        try {
            now = Files.readAttributes(path, BasicFileAttributes.class);
        } catch (NoSuchFileException e) {
            return fileSize;
        }
        if (fileKey != null && !fileKey.equals(now.fileKey())) {
            return fileSize;
        }
        return now.size();
    }

    /**
     * Whether {@link #path()} still names the file that was mapped: false once the path is gone or names another
     * file (a download replaced it), and false where the file system gives no file key to tell. A reader that opens
     * the path again (direct I/O) reads the mapped file's bytes only while this holds.
     */
    public boolean pathNamesMappedFile() throws IOException {
        if (fileKey == null) {
            return false;
        }
        try {
            return fileKey.equals(Files.readAttributes(path, BasicFileAttributes.class).fileKey());
        } catch (NoSuchFileException e) {
            return false;
        }
    }

    @Override
    public void close() {
        if (ownsArena) {
            arena.close();
        }
    }
}

package dev.dequant4j.internal.gguf;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.InputFiles;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A GGUF file (version 2 or 3, little-endian) mapped once and validated as strictly as ggml's own reader
 * ({@code gguf_init_from_file}) and more: counts are bounded by the bytes left, keys and tensor names are unique
 * UTF-8, a name is shorter than ggml's 64 bytes, a tensor has at most 4 dimensions, a known type and whole blocks per
 * row, each tensor starts exactly where the previous one's aligned end puts it, and nothing follows the last
 * tensor's padding. Hostile files are expected: every refusal is one {@link Dequant4jException} naming the file.
 */
public final class GgufFile implements AutoCloseable {
    /** "GGUF" read as a little-endian uint32. */
    static final int MAGIC = 0x46554747;
    /** gguf-py's {@code GGUF_DEFAULT_ALIGNMENT}. */
    public static final int DEFAULT_ALIGNMENT = 32;
    /** ggml's {@code GGML_MAX_NAME}: names must be shorter. */
    public static final int MAX_NAME_BYTES = 64;
    /** ggml's {@code GGML_MAX_DIMS}. */
    public static final int MAX_DIMS = 4;
    /** Elements in one metadata array: far above any vocabulary (256k) or merge list (1M) seen in real files. */
    public static final long MAX_ARRAY_ELEMENTS = 1L << 24;
    /** Strings in all metadata together, so that a file of empty strings cannot exhaust the heap. */
    public static final long MAX_STRINGS = 1L << 22;

    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** One tensor as the file describes it; {@code ne} is in ggml's order, innermost (row) dimension first. */
    public record Tensor(String name, long[] ne, GgmlType type, long offset, long byteSize) {}

    private final Path path;
    private final Arena arena;
    private final MemorySegment mapping;
    private final int version;
    private final int alignment;
    private final long dataOffset;
    private final GgufMetadata metadata;
    private final Map<String, Tensor> tensors;

    private GgufFile(Path path, Arena arena, MemorySegment mapping, int version, int alignment, long dataOffset,
                     GgufMetadata metadata, Map<String, Tensor> tensors) {
        this.path = path;
        this.arena = arena;
        this.mapping = mapping;
        this.version = version;
        this.alignment = alignment;
        this.dataOffset = dataOffset;
        this.metadata = metadata;
        this.tensors = tensors;
    }

    /** True when {@code file} starts with the GGUF magic; false for anything unreadable or shorter. */
    public static boolean looksLikeGguf(Path file) {
        if (!Files.isRegularFile(file)) {
            return false;
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
            int n;
            do {
                n = ch.read(b);
            } while (n > 0 && b.hasRemaining());
            return !b.hasRemaining() && b.getInt(0) == MAGIC;
        } catch (IOException e) {
            return false;
        }
    }

    /** Opens, maps and validates {@code path}; {@link #close()} unmaps it. */
    public static GgufFile open(Path path) {
        InputFiles.requireRegular(path);
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            MemorySegment map = size == 0 ? MemorySegment.NULL : ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            return parse(path, arena, map);
        } catch (NoSuchFileException e) {
            arena.close();
            throw new Dequant4jException(Kind.IO, path, "no such file");
        } catch (IOException e) {
            arena.close();
            throw new Dequant4jException(Kind.IO, path, "cannot read: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Validates a whole file held in memory exactly as {@link #open} does; {@code name} is for messages only. */
    public static GgufFile parse(Path name, byte[] contents) {
        return parse(name, null, MemorySegment.ofArray(contents));
    }

    private static GgufFile parse(Path path, Arena arena, MemorySegment map) {
        Reader r = new Reader(path, map);
        if (map.byteSize() < 4 || r.u32() != MAGIC) {
            throw r.fail("not a GGUF file (no 'GGUF' magic)");
        }
        int version = r.u32();
        if (Integer.reverseBytes(version) == 2 || Integer.reverseBytes(version) == 3) {
            throw r.unsupported("big-endian GGUF is not supported");
        }
        if (version != 2 && version != 3) {
            throw r.unsupported("GGUF version " + Integer.toUnsignedString(version) + " is not supported (2 and 3 are)");
        }
        long tensorCount = r.count("tensor count", 24);
        long kvCount = r.count("metadata count", 8 + 4 + 1);
        GgufMetadata metadata = new GgufMetadata();
        for (long i = 0; i < kvCount; i++) {
            readEntry(r, metadata);
        }
        int alignment = alignment(r, metadata);
        Map<String, Tensor> tensors = LinkedHashMap.newLinkedHashMap((int) tensorCount);
        long expected = 0;
        Tensor last = null;
        for (long i = 0; i < tensorCount; i++) {
            last = readTensorInfo(r, expected);
            if (tensors.putIfAbsent(last.name(), last) != null) {
                throw r.fail("tensor '" + last.name() + "' appears twice");
            }
            expected = last.offset() + pad(last.byteSize(), alignment);
        }
        long dataOffset = pad(r.pos, alignment);
        checkEnd(r, last, dataOffset, expected);
        return new GgufFile(path, arena, map, version, alignment, dataOffset, metadata,
                Collections.unmodifiableMap(tensors));
    }

    private static void readEntry(Reader r, GgufMetadata metadata) {
        String key = r.string("metadata key");
        if (metadata.get(key) != null) {
            throw r.fail("metadata key '" + key + "' appears twice");
        }
        GgufType type = r.type("metadata '" + key + "'");
        GgufMetadata.Value v;
        if (type == GgufType.ARRAY) {
            GgufType element = r.type("metadata '" + key + "' array");
            if (element == GgufType.ARRAY) {
                throw r.unsupported("metadata '" + key + "': nested arrays are not supported (ggml refuses them too)");
            }
            v = new GgufMetadata.Value(type, element, r.array(key, element));
        } else {
            v = new GgufMetadata.Value(type, null, r.scalar(key, type));
        }
        metadata.put(key, v);
    }

    private static int alignment(Reader r, GgufMetadata metadata) {
        GgufMetadata.Value v = metadata.get("general.alignment");
        if (v == null) {
            return DEFAULT_ALIGNMENT;
        }
        if (v.type() != GgufType.UINT32) {
            throw r.fail("general.alignment is " + v.type() + ", not UINT32");
        }
        long a = (Long) v.value();
        if (!validAlignment(a)) {
            throw r.fail("general.alignment " + a + " is not a power of two up to 2^30");
        }
        return (int) a;
    }

    private static Tensor readTensorInfo(Reader r, long expectedOffset) {
        String name = r.string("tensor name");
        if (name.getBytes(StandardCharsets.UTF_8).length >= MAX_NAME_BYTES) {
            throw r.fail("tensor '" + name + "': name is " + name.getBytes(StandardCharsets.UTF_8).length
                    + " bytes, ggml allows at most " + (MAX_NAME_BYTES - 1));
        }
        long dims = Integer.toUnsignedLong(r.u32());
        if (dims > MAX_DIMS) {
            throw r.fail("tensor '" + name + "' has " + dims + " dimensions, ggml allows at most " + MAX_DIMS);
        }
        long[] ne = new long[(int) dims];
        long elements = 1;
        for (int d = 0; d < dims; d++) {
            ne[d] = r.u64();
            if (ne[d] < 0 || (ne[d] != 0 && elements > Long.MAX_VALUE / ne[d])) {
                throw r.fail("tensor '" + name + "': shape does not fit 64 bits");
            }
            elements *= ne[d];
        }
        long typeId = Integer.toUnsignedLong(r.u32());
        GgmlType type = GgmlType.byId(typeId);
        if (type == null) {
            throw r.fail("tensor '" + name + "': unknown ggml type " + typeId);
        }
        long bytes = type.bytes(dims == 0 ? 1 : ne[0], elements);
        if (bytes < 0) {
            throw r.fail("tensor '" + name + "': a row of " + (dims == 0 ? 1 : ne[0]) + " elements is not a whole "
                    + "number of " + type + " blocks of " + type.blockSize);
        }
        long offset = r.u64();
        if (offset != expectedOffset) {
            throw r.fail("tensor '" + name + "': data offset " + Long.toUnsignedString(offset) + ", expected "
                    + expectedOffset + " (tensors must follow each other, aligned)");
        }
        return new Tensor(name, ne, type, offset, bytes);
    }

    /**
     * The data ends with the {@code last} tensor or within its padding; a cut inside the final padding is accepted.
     * Without tensors the file ends after the tensor infos or within the padding up to the data offset.
     */
    private static void checkEnd(Reader r, Tensor last, long dataOffset, long paddedEnd) {
        long size = r.map.byteSize();
        long min = r.pos;
        long max = dataOffset;
        if (last != null) {
            if (dataOffset > Long.MAX_VALUE - paddedEnd) {
                throw r.fail("tensor data does not fit 64 bits");
            }
            min = dataOffset + last.offset() + last.byteSize();
            max = dataOffset + paddedEnd;
        }
        if (size < min) {
            throw r.fail("file is " + size + " bytes but its tensors need " + min + " (truncated?)");
        }
        if (size > max) {
            throw r.fail((size - max) + " bytes follow the last tensor's data");
        }
    }

    /** ggml and gguf-py accept a non-zero power of two; 2^30 keeps the padding within an int. */
    static boolean validAlignment(long a) {
        return a > 0 && Long.bitCount(a) == 1 && a <= 1 << 30;
    }

    static long pad(long n, long alignment) {
        return (n + alignment - 1) / alignment * alignment;
    }

    /** Bounds-checked little-endian reads from the mapping; every failure names the file and the offset. */
    private static final class Reader {
        final Path path;
        final MemorySegment map;
        long pos;
        long strings;

        Reader(Path path, MemorySegment map) {
            this.path = path;
            this.map = map;
        }

        Dequant4jException fail(String what) {
            return new Dequant4jException(Kind.CORRUPT_INPUT, path, what);
        }

        Dequant4jException unsupported(String what) {
            return new Dequant4jException(Kind.UNSUPPORTED_INPUT, path, what);
        }

        void need(long n, String what) {
            if (n < 0 || n > map.byteSize() - pos) {
                throw fail("truncated at byte " + pos + " reading " + what);
            }
        }

        int u32() {
            need(4, "a 32-bit value");
            int v = map.get(U32, pos);
            pos += 4;
            return v;
        }

        long u64() {
            need(8, "a 64-bit value");
            long v = map.get(U64, pos);
            pos += 8;
            return v;
        }

        /** A count of items of at least {@code minBytes} each: more than the bytes left can hold is corrupt. */
        long count(String what, long minBytes) {
            long n = u64();
            if (n < 0 || n > (map.byteSize() - pos) / minBytes) {
                throw fail(what + " " + Long.toUnsignedString(n) + " is more than the file's "
                        + (map.byteSize() - pos) + " remaining bytes can hold");
            }
            return n;
        }

        GgufType type(String what) {
            int id = u32();
            for (GgufType t : GgufType.values()) {
                if (t.id == id) {
                    return t;
                }
            }
            throw fail(what + ": unknown value type " + Integer.toUnsignedString(id));
        }

        String string(String what) {
            long n = u64();
            need(n, what);
            if (++strings > MAX_STRINGS) {
                throw fail("more than " + MAX_STRINGS + " strings in the metadata");
            }
            ByteBuffer bytes = map.asSlice(pos, n).asByteBuffer();
            pos += n;
            try {
                return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT).decode(bytes).toString();
            } catch (CharacterCodingException e) {
                throw fail(what + " at byte " + (pos - n) + " is not valid UTF-8");
            }
        }

        Object scalar(String key, GgufType type) {
            return switch (type) {
                case UINT8 -> Integer.valueOf(u8() & 0xFF);
                case INT8 -> Integer.valueOf(u8());
                case UINT16 -> Integer.valueOf(u16() & 0xFFFF);
                case INT16 -> Integer.valueOf(u16());
                case UINT32 -> Long.valueOf(Integer.toUnsignedLong(u32()));
                case INT32 -> Integer.valueOf(u32());
                case UINT64, INT64 -> Long.valueOf(u64());
                case FLOAT32 -> Float.valueOf(Float.intBitsToFloat(u32()));
                case FLOAT64 -> Double.valueOf(Double.longBitsToDouble(u64()));
                case BOOL -> bool(key);
                case STRING -> string("metadata '" + key + "'");
                case ARRAY -> throw new IllegalArgumentException("array");
            };
        }

        Object array(String key, GgufType element) {
            long n = count("metadata '" + key + "' array length", element == GgufType.STRING ? 8 : width(element));
            if (n > MAX_ARRAY_ELEMENTS) {
                throw fail("metadata '" + key + "': array of " + n + " elements, more than the limit of "
                        + MAX_ARRAY_ELEMENTS);
            }
            int len = (int) n;
            return switch (element) {
                case UINT8, INT8, UINT16, INT16, INT32 -> {
                    int[] a = new int[len];
                    for (int i = 0; i < len; i++) {
                        a[i] = ((Number) scalar(key, element)).intValue();
                    }
                    yield a;
                }
                case UINT32, UINT64, INT64 -> {
                    long[] a = new long[len];
                    for (int i = 0; i < len; i++) {
                        a[i] = ((Number) scalar(key, element)).longValue();
                    }
                    yield a;
                }
                case FLOAT32 -> {
                    float[] a = new float[len];
                    for (int i = 0; i < len; i++) {
                        a[i] = Float.intBitsToFloat(u32());
                    }
                    yield a;
                }
                case FLOAT64 -> {
                    double[] a = new double[len];
                    for (int i = 0; i < len; i++) {
                        a[i] = Double.longBitsToDouble(u64());
                    }
                    yield a;
                }
                case BOOL -> {
                    boolean[] a = new boolean[len];
                    for (int i = 0; i < len; i++) {
                        a[i] = bool(key);
                    }
                    yield a;
                }
                case STRING -> {
                    List<String> a = new ArrayList<>(len);
                    for (int i = 0; i < len; i++) {
                        a.add(string("metadata '" + key + "' element " + i));
                    }
                    yield Collections.unmodifiableList(a);
                }
                case ARRAY -> throw new IllegalArgumentException("nested array");
            };
        }

        private byte u8() {
            need(1, "a byte");
            return map.get(ValueLayout.JAVA_BYTE, pos++);
        }

        private short u16() {
            return (short) (u8() & 0xFF | u8() << 8);
        }

        private Boolean bool(String key) {
            byte b = u8();
            if (b != 0 && b != 1) {
                throw fail("metadata '" + key + "': boolean byte " + (b & 0xFF) + " is neither 0 nor 1");
            }
            return b == 1;
        }

        private static long width(GgufType t) {
            return switch (t) {
                case UINT8, INT8, BOOL -> 1;
                case UINT16, INT16 -> 2;
                case UINT32, INT32, FLOAT32 -> 4;
                default -> 8;
            };
        }
    }

    public Path path() {
        return path;
    }

    public int version() {
        return version;
    }

    /** The data alignment: {@code general.alignment}, or 32 without it. */
    public int alignment() {
        return alignment;
    }

    /** Where tensor data starts; tensor offsets count from here. */
    public long dataOffset() {
        return dataOffset;
    }

    public long fileSize() {
        return mapping.byteSize();
    }

    public GgufMetadata metadata() {
        return metadata;
    }

    /** Tensors in file order. */
    public Map<String, Tensor> tensors() {
        return tensors;
    }

    /** Zero-copy view of a tensor's bytes. */
    public MemorySegment data(Tensor t) {
        return mapping.asSlice(dataOffset + t.offset(), t.byteSize());
    }

    /** Unmaps the file; views from {@link #data} must not be used afterwards. */
    @Override
    public void close() {
        if (arena != null) {
            arena.close();
        }
    }
}

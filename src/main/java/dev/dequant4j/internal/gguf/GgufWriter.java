package dev.dequant4j.internal.gguf;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/**
 * Lays out a GGUF v3 file byte for byte as gguf-py's {@code GGUFWriter} does: header, metadata in insertion order,
 * tensor infos with running aligned offsets, zero padding up to the data, then each tensor followed by zero padding
 * to the alignment (the last one too). The layout is fixed before any data is written, so that a caller can stream
 * tensors in order ({@link #header()}, then each tensor's bytes and {@link #paddingAfter}).
 */
public final class GgufWriter {
    static final int VERSION = 3;

    /** A tensor to be written; {@code ne} in ggml's order, innermost dimension first. */
    public record Planned(String name, long[] ne, GgmlType type) {
        public Planned {
            ne = ne.clone();
        }

        /** Bytes of the tensor's data, without padding. */
        public long byteSize() {
            long elements = 1;
            for (long d : ne) {
                elements = Math.multiplyExact(elements, d);
            }
            long bytes = type.bytes(ne.length == 0 ? 1 : ne[0], elements);
            if (bytes < 0) {
                throw new IllegalArgumentException(name + ": " + ne[0] + " is not a whole number of " + type
                        + " blocks");
            }
            return bytes;
        }
    }

    private final List<Planned> tensors;
    private final int alignment;
    private final byte[] header;
    private final long[] offsets;

    /** Fixes the layout; {@code general.alignment}, when present, must be a UINT32 power of two. */
    public GgufWriter(GgufMetadata metadata, List<Planned> tensors) {
        this.tensors = List.copyOf(tensors);
        this.alignment = alignmentOf(metadata);
        this.offsets = new long[this.tensors.size()];
        Out out = new Out();
        out.u32(GgufFile.MAGIC);
        out.u32(VERSION);
        out.u64(this.tensors.size());
        out.u64(metadata.entries().size());
        for (Map.Entry<String, GgufMetadata.Value> e : metadata.entries().entrySet()) {
            out.string(e.getKey());
            out.value(e.getKey(), e.getValue());
        }
        long offset = 0;
        for (int i = 0; i < this.tensors.size(); i++) {
            Planned t = this.tensors.get(i);
            checkName(t.name());
            out.string(t.name());
            out.u32(t.ne().length);
            for (long d : t.ne()) {
                out.u64(d);
            }
            out.u32(t.type().id);
            out.u64(offset);
            offsets[i] = offset;
            offset += GgufFile.pad(t.byteSize(), alignment);
        }
        out.zeros(GgufFile.pad(out.size(), alignment) - out.size());
        this.header = out.toByteArray();
    }

    private static int alignmentOf(GgufMetadata metadata) {
        GgufMetadata.Value v = metadata.get("general.alignment");
        if (v == null) {
            return GgufFile.DEFAULT_ALIGNMENT;
        }
        long a = v.type() == GgufType.UINT32 ? ((Number) v.value()).longValue() : -1;
        if (!GgufFile.validAlignment(a)) {
            throw new IllegalArgumentException("general.alignment must be a UINT32 power of two, is " + v.value());
        }
        return (int) a;
    }

    private static void checkName(String name) {
        if (name.getBytes(StandardCharsets.UTF_8).length >= GgufFile.MAX_NAME_BYTES) {
            throw new IllegalArgumentException("tensor name '" + name + "' is longer than ggml's "
                    + (GgufFile.MAX_NAME_BYTES - 1) + " bytes");
        }
    }

    /** Everything before the first tensor's data, padding included. */
    public ByteBuffer header() {
        return ByteBuffer.wrap(header).asReadOnlyBuffer();
    }

    /** Where tensor data starts. */
    public long dataOffset() {
        return header.length;
    }

    /** Offset of tensor {@code i}'s data from {@link #dataOffset()}. */
    public long offset(int i) {
        return offsets[i];
    }

    /** Zero bytes that follow tensor {@code i}'s data. */
    public int paddingAfter(int i) {
        long n = tensors.get(i).byteSize();
        return (int) (GgufFile.pad(n, alignment) - n);
    }

    /** Size of the whole file. */
    public long fileSize() {
        if (tensors.isEmpty()) {
            return header.length;
        }
        int last = tensors.size() - 1;
        return header.length + offsets[last] + GgufFile.pad(tensors.get(last).byteSize(), alignment);
    }

    public int alignment() {
        return alignment;
    }

    /** Writes the whole file to {@code ch}; {@code data.get(i)} holds exactly tensor {@code i}'s bytes. */
    public void writeTo(WritableByteChannel ch, List<ByteBuffer> data) throws IOException {
        if (data.size() != tensors.size()) {
            throw new IllegalArgumentException(data.size() + " data buffers for " + tensors.size() + " tensors");
        }
        writeFully(ch, header());
        for (int i = 0; i < tensors.size(); i++) {
            ByteBuffer b = data.get(i).duplicate();
            if (b.remaining() != tensors.get(i).byteSize()) {
                throw new IllegalArgumentException(tensors.get(i).name() + ": " + b.remaining() + " bytes, needs "
                        + tensors.get(i).byteSize());
            }
            writeFully(ch, b);
            writeFully(ch, ByteBuffer.allocate(paddingAfter(i)));
        }
    }

    private static void writeFully(WritableByteChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Little-endian encoder of the header. */
    private static final class Out extends ByteArrayOutputStream {
        void u32(long v) {
            ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt((int) v);
            write(b.array(), 0, 4);
        }

        void u64(long v) {
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(v);
            write(b.array(), 0, 8);
        }

        void zeros(long n) {
            for (long i = 0; i < n; i++) {
                write(0);
            }
        }

        void string(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            u64(b.length);
            write(b, 0, b.length);
        }

        void value(String key, GgufMetadata.Value v) {
            u32(v.type().id);
            if (v.type() != GgufType.ARRAY) {
                scalar(v.type(), v.value());
                return;
            }
            u32(v.elementType().id);
            switch (v.value()) {
                case List<?> l -> {
                    u64(l.size());
                    l.forEach(s -> string((String) s));
                }
                case int[] a -> {
                    u64(a.length);
                    for (int x : a) {
                        scalar(v.elementType(), x);
                    }
                }
                case long[] a -> {
                    u64(a.length);
                    for (long x : a) {
                        scalar(v.elementType(), x);
                    }
                }
                case float[] a -> {
                    u64(a.length);
                    for (float x : a) {
                        u32(Float.floatToRawIntBits(x));
                    }
                }
                case double[] a -> {
                    u64(a.length);
                    for (double x : a) {
                        u64(Double.doubleToRawLongBits(x));
                    }
                }
                case boolean[] a -> {
                    u64(a.length);
                    for (boolean x : a) {
                        write(x ? 1 : 0);
                    }
                }
                default -> throw new IllegalArgumentException(key + ": unsupported array " + v.value().getClass());
            }
        }

        private void scalar(GgufType type, Object value) {
            switch (type) {
                case UINT8, INT8 -> write(((Number) value).intValue());
                case UINT16, INT16 -> {
                    int x = ((Number) value).intValue();
                    write(x);
                    write(x >>> 8);
                }
                case UINT32, INT32 -> u32(((Number) value).longValue());
                case UINT64, INT64 -> u64(((Number) value).longValue());
                case FLOAT32 -> u32(Float.floatToRawIntBits(((Number) value).floatValue()));
                case FLOAT64 -> u64(Double.doubleToRawLongBits(((Number) value).doubleValue()));
                case BOOL -> write((Boolean) value ? 1 : 0);
                case STRING -> string((String) value);
                case ARRAY -> throw new IllegalArgumentException("nested array");
            }
        }
    }
}

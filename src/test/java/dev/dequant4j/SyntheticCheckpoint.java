package dev.dequant4j;

import dev.dequant4j.internal.safetensors.TensorEntry;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * Writes bitsandbytes-style tensors with random contents into a safetensors file, so that the GPU tests can cover
 * shapes, blocksizes and storage variants the fixtures do not have (odd sizes, partial blocks, every blocksize, F16
 * and BF16 absmax, large tensors). Values are random bit patterns of the right kind; the oracle decides what they
 * mean. Tensors are stored in the order they are added, each 4-bit weight's components side by side.
 */
public final class SyntheticCheckpoint {
    private record Entry(String name, String dtype, long[] shape, byte[] data) {}

    private final List<Entry> entries = new ArrayList<>();
    private final Random rnd;

    public SyntheticCheckpoint(long seed) {
        this.rnd = new Random(seed);
    }

    public SyntheticCheckpoint add(String name, String dtype, long[] shape, byte[] data) {
        entries.add(new Entry(name, dtype, shape.clone(), data));
        return this;
    }

    /**
     * A 4-bit weight {@code prefix.weight} of the given shape.
     *
     * @param absmaxDtype F32, F16 or BF16 scales without double quantization (ignored with it)
     */
    public SyntheticCheckpoint fourBit(String prefix, long[] shape, String quantType, int blocksize, boolean nested,
                                DType dtype, DType absmaxDtype) {
        long n = TensorEntry.numel(shape);
        long nb = (n + blocksize - 1) / blocksize;
        String w = prefix + ".weight";
        add(w, "U8", new long[] {(n + 1) / 2, 1}, randomBytes((n + 1) / 2));
        add(w + ".quant_map", "F32", new long[] {16}, floats(code(quantType)));
        StringBuilder qs = new StringBuilder();
        qs.append("{\"quant_type\": \"").append(quantType).append("\", \"blocksize\": ").append(blocksize)
                .append(", \"dtype\": \"").append(dtype.torchName()).append("\", \"shape\": [");
        for (int i = 0; i < shape.length; i++) {
            qs.append(i > 0 ? ", " : "").append(shape[i]);
        }
        qs.append("]");
        if (nested) {
            float offset = 0.01f + rnd.nextFloat() * 0.02f;
            qs.append(", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ")
                    .append(String.format(Locale.ROOT, "%.17g", (double) offset));
            add(w + ".absmax", "U8", new long[] {nb}, randomBytes(nb));
            float[] map = new float[256];
            for (int i = 0; i < 256; i++) {
                map[i] = (i - 127.5f) / 128f + rnd.nextFloat() * 1e-3f;
            }
            add(w + ".nested_quant_map", "F32", new long[] {256}, floats(map));
            add(w + ".nested_absmax", "F32", new long[] {(nb + 255) / 256}, floats(positive((nb + 255) / 256)));
        } else {
            float[] absmax = positive(nb);
            byte[] data = switch (absmaxDtype) {
                case F32 -> floats(absmax);
                case F16, BF16 -> halves(absmax, absmaxDtype);
                default -> throw new IllegalArgumentException(absmaxDtype.toString());
            };
            add(w + ".absmax", absmaxDtype.name(), new long[] {nb}, data);
        }
        qs.append("}");
        byte[] json = qs.toString().getBytes(StandardCharsets.UTF_8);
        add(w + ".quant_state.bitsandbytes__" + quantType, "U8", new long[] {json.length}, json);
        return this;
    }

    /** Overwrites element {@code index} of the F32 tensor {@code name} with the float of these bits. */
    public SyntheticCheckpoint setF32Bits(String name, int index, int bits) {
        Entry e = entries.stream().filter(x -> x.name.equals(name)).findFirst().orElseThrow();
        if (!e.dtype.equals("F32")) {
            throw new IllegalArgumentException(name + " is " + e.dtype);
        }
        ByteBuffer.wrap(e.data).order(ByteOrder.LITTLE_ENDIAN).putInt(4 * index, bits);
        return this;
    }

    /** An LLM.int8 weight {@code prefix.weight} [rows, cols] with its SCB. */
    public SyntheticCheckpoint int8(String prefix, long rows, long cols) {
        add(prefix + ".weight", "I8", new long[] {rows, cols}, randomBytes(rows * cols));
        add(prefix + ".SCB", "F32", new long[] {rows}, floats(positive(rows)));
        add(prefix + ".weight_format", "U8", new long[] {}, new byte[] {0});
        return this;
    }

    /** A plain tensor of random finite values (F32, F16, BF16 or F64). */
    public SyntheticCheckpoint plain(String name, long[] shape, DType dtype) {
        long n = TensorEntry.numel(shape);
        byte[] data = new byte[(int) dtype.byteSize(n)];
        ByteBuffer b = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
        for (long i = 0; i < n; i++) {
            float v = (float) rnd.nextGaussian() * 0.05f;
            switch (dtype) {
                case F32 -> b.putFloat(v);
                case F64 -> b.putDouble(rnd.nextGaussian() * 0.05);
                case F16 -> b.putShort(Float.floatToFloat16(v));
                case BF16 -> b.putShort((short) (Float.floatToRawIntBits(v) >>> 16));
                default -> throw new IllegalArgumentException(dtype.toString());
            }
        }
        return add(name, dtype.name(), shape, data);
    }

    public float[] gaussian(int n, double sigma) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (rnd.nextGaussian() * sigma);
        }
        return v;
    }

    public Random random() {
        return rnd;
    }

    public Path write(Path file) throws IOException {
        StringBuilder h = new StringBuilder("{");
        long off = 0;
        for (Entry e : entries) {
            if (h.length() > 1) {
                h.append(',');
            }
            h.append('"').append(e.name).append("\":{\"dtype\":\"").append(e.dtype).append("\",\"shape\":[");
            for (int i = 0; i < e.shape.length; i++) {
                h.append(i > 0 ? "," : "").append(e.shape[i]);
            }
            h.append("],\"data_offsets\":[").append(off).append(',').append(off + e.data.length).append("]}");
            off += e.data.length;
        }
        h.append('}');
        while ((h.length() + 8) % 8 != 0) {
            h.append(' ');
        }
        byte[] header = h.toString().getBytes(StandardCharsets.UTF_8);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).flip();
            ch.write(len);
            ch.write(ByteBuffer.wrap(header));
            for (Entry e : entries) {
                ch.write(ByteBuffer.wrap(e.data));
            }
        }
        return file;
    }

    private byte[] randomBytes(long n) {
        byte[] b = new byte[Math.toIntExact(n)];
        rnd.nextBytes(b);
        return b;
    }

    private float[] positive(long n) {
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = 0.001f + rnd.nextFloat() * 0.2f;
        }
        return v;
    }

    public static byte[] floats(float[] v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putFloat(f);
        }
        return b.array();
    }

    private static byte[] halves(float[] v, DType d) {
        ByteBuffer b = ByteBuffer.allocate(2 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putShort(d == DType.F16 ? Float.floatToFloat16(f) : (short) (Float.floatToRawIntBits(f) >>> 16));
        }
        return b.array();
    }

    private static float[] code(String quantType) {
        return quantType.equals("nf4") ? dev.dequant4j.internal.bnb.Nf4.code() : dev.dequant4j.internal.bnb.Fp4.code();
    }
}

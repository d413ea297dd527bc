package dev.dequant4j;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Builds safetensors bytes by hand, independently of the library's writer: the header JSON is concatenated as
 * text, so tests can produce exactly the (valid or broken) files they need.
 */
public final class RawSafetensors {
    private RawSafetensors() {}

    /** A tensor with its dtype name as written in the header and its raw little-endian bytes. */
    public record Tensor(String name, String dtype, long[] shape, byte[] data) {}

    /** A header entry as text. */
    public static String entry(String name, String dtype, String shape, long begin, long end) {
        return quote(name) + ":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + begin + ","
                + end + "]}";
    }

    /** {@code {"__metadata__":{"format":"pt"},entries...}}. */
    public static String header(String... entries) {
        StringBuilder sb = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        for (String e : entries) {
            sb.append(',').append(e);
        }
        return sb.append('}').toString();
    }

    /** The length prefix, the header as UTF-8, and the data. */
    public static byte[] file(String header, byte[] data) {
        return raw(header.getBytes(StandardCharsets.UTF_8).length, header.getBytes(StandardCharsets.UTF_8), data);
    }

    /** A length prefix of {@code declared} (which need not match), then the header bytes and the data. */
    public static byte[] raw(long declared, byte[] header, byte[] data) {
        ByteBuffer b = ByteBuffer.allocate(8 + header.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(declared).put(header).put(data);
        return b.array();
    }

    /** A valid file with the tensors' data in the given order, one after another. */
    public static byte[] file(List<Tensor> tensors) {
        List<String> entries = new ArrayList<>();
        int total = 0;
        for (Tensor t : tensors) {
            entries.add(entry(t.name(), t.dtype(), shape(t.shape()), total, total + t.data().length));
            total += t.data().length;
        }
        byte[] data = new byte[total];
        int at = 0;
        for (Tensor t : tensors) {
            System.arraycopy(t.data(), 0, data, at, t.data().length);
            at += t.data().length;
        }
        return file(header(entries.toArray(String[]::new)), data);
    }

    public static String shape(long... dims) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < dims.length; i++) {
            if (i > 0) {
                sb.append(',');
            }
            sb.append(dims[i]);
        }
        return sb.append(']').toString();
    }

    public static Path write(Path file, byte[] bytes) {
        try {
            Files.createDirectories(file.toAbsolutePath().getParent());
            return Files.write(file, bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A JSON string literal (quote, backslash and control characters escaped). */
    public static String quote(String s) {
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                sb.append('\\').append(c);
            } else if (c < 0x20) {
                sb.append(String.format("\\u%04x", (int) c));
            } else {
                sb.append(c);
            }
        }
        return sb.append('"').toString();
    }

    public static byte[] f32(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putFloat(f);
        }
        return b.array();
    }

    public static byte[] u16(int... bits) {
        ByteBuffer b = ByteBuffer.allocate(2 * bits.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int s : bits) {
            b.putShort((short) s);
        }
        return b.array();
    }

    /** The value of an IEEE binary16 bit pattern, computed from its fields in double precision. */
    public static double f16Value(int bits) {
        int sign = (bits >>> 15) & 1;
        int exp = (bits >>> 10) & 0x1F;
        int mant = bits & 0x3FF;
        double v;
        if (exp == 0) {
            v = mant / 1024.0 * Math.pow(2, -14);
        } else if (exp == 31) {
            v = mant == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
        } else {
            v = (1 + mant / 1024.0) * Math.pow(2, exp - 15);
        }
        return sign == 1 ? -v : v;
    }

    /** The value of a bfloat16 bit pattern, computed from its fields in double precision. */
    public static double bf16Value(int bits) {
        int sign = (bits >>> 15) & 1;
        int exp = (bits >>> 7) & 0xFF;
        int mant = bits & 0x7F;
        double v;
        if (exp == 0) {
            v = mant / 128.0 * Math.pow(2, -126);
        } else if (exp == 255) {
            v = mant == 0 ? Double.POSITIVE_INFINITY : Double.NaN;
        } else {
            v = (1 + mant / 128.0) * Math.pow(2, exp - 127);
        }
        return sign == 1 ? -v : v;
    }
}

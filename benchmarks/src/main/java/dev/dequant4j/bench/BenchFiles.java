package dev.dequant4j.bench;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Safetensors files for the benchmarks, written directly so that multi-GB data sections can stay sparse. */
final class BenchFiles {
    private BenchFiles() {}

    /** The names a Llama-style checkpoint has, cycled: 9 tensors per layer. */
    private static final String[] PER_LAYER = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj",
        "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
        "mlp.down_proj"};

    static String name(int i) {
        return "model.layers." + i / PER_LAYER.length + "." + PER_LAYER[i % PER_LAYER.length] + ".weight";
    }

    /**
     * A header of {@code n} BF16 tensors of shape {@code [rows, cols]}, compact as serde_json writes it, padded with
     * spaces to {@code padTo} bytes (0: to a multiple of 8).
     */
    static byte[] header(int n, long rows, long cols, int padTo) {
        StringBuilder sb = new StringBuilder(n * 110 + 64).append("{\"__metadata__\":{\"format\":\"pt\"}");
        long bytes = rows * cols * 2;
        long off = 0;
        for (int i = 0; i < n; i++) {
            sb.append(",\"").append(name(i)).append("\":{\"dtype\":\"BF16\",\"shape\":[").append(rows).append(',')
                    .append(cols).append("],\"data_offsets\":[").append(off).append(',').append(off + bytes)
                    .append("]}");
            off += bytes;
        }
        sb.append('}');
        int len = sb.length();
        int target = padTo > 0 ? padTo : (len + 7) / 8 * 8;
        if (target < len) {
            throw new IllegalArgumentException("header of " + len + " bytes does not fit " + padTo);
        }
        sb.repeat(' ', target - len);
        return sb.toString().getBytes(StandardCharsets.UTF_8);
    }

    /** Writes the length prefix and header, then sets the file's length: the data section is a hole, never written. */
    static Path sparse(Path file, byte[] header, long dataBytes) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE, StandardOpenOption.SPARSE)) {
            ByteBuffer b = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
            b.putLong(header.length).put(header).flip();
            while (b.hasRemaining()) {
                ch.write(b);
            }
            if (dataBytes > 0) {
                // one byte at the very end gives the file its size without allocating the blocks before it
                ch.write(ByteBuffer.wrap(new byte[1]), 8L + header.length + dataBytes - 1);
            }
            return file;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static void delete(Path p) {
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}

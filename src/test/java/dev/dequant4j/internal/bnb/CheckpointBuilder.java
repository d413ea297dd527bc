package dev.dequant4j.internal.bnb;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.StoredTensor;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A checkpoint under construction in a test: stored tensors (name, dtype, shape, little-endian bytes) in order,
 * taken from a fixture or made up, altered, and written with the library's {@link SafetensorsWriter}.
 */
final class CheckpointBuilder {
    record Tensor(String name, DType dtype, long[] shape, byte[] data) {}

    private final Map<String, Tensor> tensors = new LinkedHashMap<>();
    private String config;

    /** Every stored tensor of a (valid) checkpoint, in stored order, and its config.json text if it has one. */
    static CheckpointBuilder copyOf(Path checkpoint) {
        CheckpointBuilder b = new CheckpointBuilder();
        try (Checkpoint c = Checkpoint.open(checkpoint)) {
            for (StoredTensor s : c.storedTensors()) {
                b.put(s.name(), s.dtype(), s.shape(), c.readBytes(s.name()));
            }
        }
        Path cfg = checkpoint.resolve("config.json");
        if (Files.isRegularFile(cfg)) {
            try {
                b.config = Files.readString(cfg);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return b;
    }

    CheckpointBuilder config(String json) {
        this.config = json;
        return this;
    }

    String config() {
        return config;
    }

    Tensor get(String name) {
        Tensor t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException("test setup: no tensor " + name);
        }
        return t;
    }

    List<String> names() {
        return List.copyOf(tensors.keySet());
    }

    /** Adds a tensor, or replaces it in place (keeping its position). */
    CheckpointBuilder put(String name, DType dtype, long[] shape, byte[] data) {
        long numel = 1;
        for (long d : shape) {
            numel *= d;
        }
        if (dtype.byteSize(numel) != data.length) {
            throw new IllegalArgumentException("test setup: " + name + " " + dtype + " " + numel + " elements, "
                    + data.length + " bytes");
        }
        tensors.put(name, new Tensor(name, dtype, shape.clone(), data.clone()));
        return this;
    }

    CheckpointBuilder putFloats(String name, long[] shape, float[] values) {
        return put(name, DType.F32, shape, floatBytes(values));
    }

    CheckpointBuilder putString(String name, String utf8) {
        byte[] b = utf8.getBytes(StandardCharsets.UTF_8);
        return put(name, DType.U8, new long[] {b.length}, b);
    }

    /** The quant state JSON text of {@code key}. */
    String string(String key) {
        return new String(get(key).data(), StandardCharsets.UTF_8);
    }

    CheckpointBuilder remove(String name) {
        if (tensors.remove(name) == null) {
            throw new IllegalArgumentException("test setup: no tensor " + name);
        }
        return this;
    }

    CheckpointBuilder rename(String from, String to) {
        Tensor t = get(from);
        Map<String, Tensor> copy = new LinkedHashMap<>(tensors);
        tensors.clear();
        for (Map.Entry<String, Tensor> e : copy.entrySet()) {
            if (e.getKey().equals(from)) {
                tensors.put(to, new Tensor(to, t.dtype(), t.shape(), t.data()));
            } else {
                tensors.put(e.getKey(), e.getValue());
            }
        }
        return this;
    }

    /** Writes {@code dir/model.safetensors} (and config.json if set); returns {@code dir}. */
    Path write(Path dir) {
        return write(dir, Long.MAX_VALUE);
    }

    /**
     * Writes shards that break right after {@code lastOfFirstShard} (the writer cuts greedily by size, so the rest
     * may take more than one shard), with {@code model.safetensors.index.json}.
     */
    Path writeSplitAfter(Path dir, String lastOfFirstShard) {
        long upTo = 0;
        for (Tensor t : tensors.values()) {
            upTo += t.data().length;
            if (t.name().equals(lastOfFirstShard)) {
                return write(dir, upTo);
            }
        }
        throw new IllegalArgumentException("test setup: no tensor " + lastOfFirstShard);
    }

    /** Writes every tensor into a shard of its own, with {@code model.safetensors.index.json}. */
    Path writeOneShardPerTensor(Path dir) {
        return write(dir, 1);
    }

    private Path write(Path dir, long maxShardBytes) {
        List<SafetensorsWriter.TensorData> data = new ArrayList<>();
        for (Tensor t : tensors.values()) {
            data.add(new SafetensorsWriter.TensorData(new ShardedLayout.Spec(t.name(), t.dtype(), t.shape()),
                    MemorySegment.ofArray(t.data())));
        }
        SafetensorsWriter.write(dir, data, maxShardBytes, false);
        if (config != null) {
            try {
                Files.writeString(dir.resolve("config.json"), config);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return dir;
    }

    static byte[] floatBytes(float[] v) {
        ByteBuffer b = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putFloat(f);
        }
        return b.array();
    }

    static float[] floats(byte[] le) {
        ByteBuffer b = ByteBuffer.wrap(le).order(ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[le.length / 4];
        for (int i = 0; i < out.length; i++) {
            out[i] = b.getFloat();
        }
        return out;
    }
}

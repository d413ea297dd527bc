package dev.dequant4j.internal.lora;

import dev.dequant4j.DType;
import dev.dequant4j.internal.cpu.ScalarKernels;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;

/** Small hand-built checkpoints and adapters for tests, written byte by byte (independently of the code under test). */
public final class TestFiles {
    private TestFiles() {}

    /** A tensor to write; {@code values} must already be representable in {@code dtype}. */
    public record T(String name, DType dtype, long[] shape, float[] values) {
        public T {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            if (n != values.length) {
                throw new IllegalArgumentException(name + ": " + values.length + " values for " + Arrays.toString(shape));
            }
        }

        /** Element {@code [i, j]} of a 2-D tensor. */
        public double at(int i, int j) {
            return values[(int) (i * shape[1] + j)];
        }
    }

    public static T t(String name, DType dtype, long[] shape, float[] values) {
        return new T(name, dtype, shape, values);
    }

    /** Deterministic values in [-scale, scale), rounded to {@code dtype}. */
    public static T random(String name, DType dtype, long[] shape, long seed, double scale) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        Random r = new Random(seed);
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = round(dtype, (float) ((r.nextDouble() * 2 - 1) * scale));
        }
        return new T(name, dtype, shape, v);
    }

    public static float round(DType dtype, float f) {
        return switch (dtype) {
            case F32 -> f;
            case F16 -> Float.float16ToFloat(Float.floatToFloat16(f));
            case BF16 -> Float.intBitsToFloat(ScalarKernels.toBf16(f) << 16);
            default -> throw new IllegalArgumentException(dtype.toString());
        };
    }

    /** Writes a single safetensors file (header in the given order, data contiguous, header padded to 8 bytes). */
    public static void safetensors(Path file, List<T> tensors) {
        StringBuilder h = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long off = 0;
        for (T t : tensors) {
            long bytes = (long) t.values().length * (t.dtype() == DType.F32 ? 4 : 2);
            h.append(",\"").append(t.name()).append("\":{\"dtype\":\"").append(t.dtype().name()).append("\",\"shape\":")
                    .append(Arrays.toString(t.shape()).replace(" ", "")).append(",\"data_offsets\":[").append(off)
                    .append(',').append(off + bytes).append("]}");
            off += bytes;
        }
        h.append('}');
        while ((h.length() + 8) % 8 != 0) {
            h.append(' ');
        }
        byte[] header = h.toString().getBytes(StandardCharsets.UTF_8);
        ByteBuffer buf = ByteBuffer.allocate((int) (8 + header.length + off)).order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(header.length).put(header);
        for (T t : tensors) {
            for (float v : t.values()) {
                switch (t.dtype()) {
                    case F32 -> buf.putFloat(v);
                    case F16 -> buf.putShort(Float.floatToFloat16(v));
                    case BF16 -> buf.putShort(ScalarKernels.toBf16(v));
                    default -> throw new IllegalArgumentException(t.dtype().toString());
                }
            }
        }
        write(file, buf.array());
    }

    /** A model directory with model.safetensors and, if {@code config} is not null, config.json. */
    public static Path model(Path dir, Map<String, Object> config, List<T> tensors) {
        mkdirs(dir);
        safetensors(dir.resolve("model.safetensors"), tensors);
        if (config != null) {
            write(dir.resolve("config.json"), json(config).getBytes(StandardCharsets.UTF_8));
        }
        return dir;
    }

    /** An adapter directory. Tensor names are given without the {@code base_model.model.} prefix, which is added. */
    public static Path adapter(Path dir, Map<String, Object> config, List<T> tensors) {
        mkdirs(dir);
        List<T> prefixed = new ArrayList<>();
        for (T t : tensors) {
            prefixed.add(new T("base_model.model." + t.name(), t.dtype(), t.shape(), t.values()));
        }
        safetensors(dir.resolve("adapter_model.safetensors"), prefixed);
        write(dir.resolve("adapter_config.json"), json(config).getBytes(StandardCharsets.UTF_8));
        return dir;
    }

    /**
     * A copy of the adapter in {@code src} under {@code dir} (created), its adapter_config.json's members changed by
     * {@code edit}; the tensors are copied as they are.
     */
    public static Path withEditedConfig(Path src, Path dir, Consumer<Map<String, JsonValue>> edit)
            throws IOException {
        Files.createDirectories(dir);
        Files.copy(src.resolve("adapter_model.safetensors"), dir.resolve("adapter_model.safetensors"));
        JsonObject c = Json.readObject(src.resolve("adapter_config.json"), 1 << 20);
        Map<String, JsonValue> m = new LinkedHashMap<>(c.members());
        edit.accept(m);
        Files.writeString(dir.resolve("adapter_config.json"), Json.write(new JsonObject(m), Json.Style.PYTHON_INDENT2),
                StandardCharsets.UTF_8);
        return dir;
    }

    /** A minimal PEFT LoRA config with the given r and alpha, plus {@code more} key/value pairs (which may override). */
    public static Map<String, Object> config(int r, double alpha, Object... more) {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("peft_type", "LORA");
        c.put("r", r);
        c.put("lora_alpha", alpha);
        c.put("use_rslora", false);
        c.put("use_dora", false);
        c.put("fan_in_fan_out", false);
        c.put("bias", "none");
        c.put("init_lora_weights", true);
        for (int i = 0; i < more.length; i += 2) {
            c.put((String) more[i], more[i + 1]);
        }
        return c;
    }

    /** A JSON text for maps, lists, strings, numbers, booleans and null. */
    public static String json(Object o) {
        StringBuilder sb = new StringBuilder();
        json(sb, o);
        return sb.toString();
    }

    private static void json(StringBuilder sb, Object o) {
        switch (o) {
            case null -> sb.append("null");
            case String s -> sb.append('"').append(s.replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
            case Map<?, ?> m -> {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    if (!first) {
                        sb.append(", ");
                    }
                    first = false;
                    json(sb, e.getKey().toString());
                    sb.append(": ");
                    json(sb, e.getValue());
                }
                sb.append('}');
            }
            case List<?> l -> {
                sb.append('[');
                for (int i = 0; i < l.size(); i++) {
                    if (i > 0) {
                        sb.append(", ");
                    }
                    json(sb, l.get(i));
                }
                sb.append(']');
            }
            default -> sb.append(o);
        }
    }

    private static void mkdirs(Path dir) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static void write(Path file, byte[] bytes) {
        try {
            Files.write(file, bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}

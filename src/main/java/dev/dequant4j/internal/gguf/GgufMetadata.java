package dev.dequant4j.internal.gguf;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The typed key-value section of a GGUF file, in insertion order (the order the file stores it in). Each value keeps
 * the GGUF type it is written with, because readers such as llama.cpp check types ({@code tokenizer.ggml.scores} must
 * be an array of FLOAT32, token ids UINT32).
 */
public final class GgufMetadata {

    /**
     * One value. Scalars: {@link String}, {@link Boolean}, {@link Integer} for the 8- and 16-bit types and INT32,
     * {@link Long} for UINT32, INT64 and UINT64 (UINT64 as its bits), {@link Float}, {@link Double}. For
     * {@link GgufType#ARRAY}, elements of {@code elementType} in a {@code List<String>}, {@code boolean[]},
     * {@code int[]} (8- and 16-bit types, INT32), {@code long[]} (UINT32, INT64, UINT64), {@code float[]} or
     * {@code double[]}.
     */
    public record Value(GgufType type, GgufType elementType, Object value) {
        public Value {
            Objects.requireNonNull(type);
            Objects.requireNonNull(value);
        }
    }

    private final Map<String, Value> entries = new LinkedHashMap<>();

    public GgufMetadata putString(String key, String v) {
        return put(key, new Value(GgufType.STRING, null, v));
    }

    public GgufMetadata putBool(String key, boolean v) {
        return put(key, new Value(GgufType.BOOL, null, v));
    }

    public GgufMetadata putUint32(String key, long v) {
        if (v < 0 || v > 0xFFFF_FFFFL) {
            throw new IllegalArgumentException(key + ": " + v + " is not a uint32");
        }
        return put(key, new Value(GgufType.UINT32, null, v));
    }

    public GgufMetadata putInt32(String key, int v) {
        return put(key, new Value(GgufType.INT32, null, v));
    }

    public GgufMetadata putUint64(String key, long v) {
        return put(key, new Value(GgufType.UINT64, null, v));
    }

    public GgufMetadata putFloat32(String key, float v) {
        return put(key, new Value(GgufType.FLOAT32, null, v));
    }

    public GgufMetadata putStringArray(String key, List<String> v) {
        return put(key, new Value(GgufType.ARRAY, GgufType.STRING, List.copyOf(v)));
    }

    public GgufMetadata putFloat32Array(String key, float[] v) {
        return put(key, new Value(GgufType.ARRAY, GgufType.FLOAT32, v.clone()));
    }

    public GgufMetadata putInt32Array(String key, int[] v) {
        return put(key, new Value(GgufType.ARRAY, GgufType.INT32, v.clone()));
    }

    /** Adds or replaces {@code key}; a replaced key keeps its original position. */
    public GgufMetadata put(String key, Value v) {
        entries.put(Objects.requireNonNull(key), v);
        return this;
    }

    public Value get(String key) {
        return entries.get(key);
    }

    /** All entries, in file order. */
    public Map<String, Value> entries() {
        return Collections.unmodifiableMap(entries);
    }
}

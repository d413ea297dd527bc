package dev.dequant4j.internal.gguf;

/** GGUF metadata value types, numbered as in ggml's {@code gguf_type} (and gguf-py's {@code GGUFValueType}). */
public enum GgufType {
    UINT8(0), INT8(1), UINT16(2), INT16(3), UINT32(4), INT32(5), FLOAT32(6), BOOL(7), STRING(8), ARRAY(9),
    UINT64(10), INT64(11), FLOAT64(12);

    /** The type's number in the file. */
    public final int id;

    GgufType(int id) {
        this.id = id;
    }
}

package dev.dequant4j.internal.json;

/** A JSON document that is malformed, too large or too deep, or a value of an unexpected type. */
public final class JsonException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final long offset;
    private final String duplicateKey;

    /** @param offset byte offset of the problem in the source, or -1 when it is not about a position */
    public JsonException(String message, long offset) {
        this(message, offset, null);
    }

    private JsonException(String message, long offset, String duplicateKey) {
        super(offset >= 0 ? message + " at byte " + offset : message);
        this.offset = offset;
        this.duplicateKey = duplicateKey;
    }

    /** A key that occurs twice in one object, at {@code offset}. */
    static JsonException duplicateKey(String key, long offset) {
        return new JsonException("duplicate key \"" + Json.abbreviate(key, 80) + "\"", offset, key);
    }

    public JsonException(String message) {
        this(message, -1);
    }

    /** The repeated key, when that is the problem (safetensors reports it as a duplicate tensor name). */
    public String duplicateKey() {
        return duplicateKey;
    }

    /** Byte offset of the problem in the source, or -1. */
    public long offset() {
        return offset;
    }
}

package dev.dequant4j.internal.json;

/** A JSON document that is malformed, too large or too deep, or a value of an unexpected type. */
public final class JsonException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    private final long offset;

    /** @param offset byte offset of the problem in the source, or -1 when it is not about a position */
    public JsonException(String message, long offset) {
        super(offset >= 0 ? message + " at byte " + offset : message);
        this.offset = offset;
    }

    public JsonException(String message) {
        this(message, -1);
    }

    /** Byte offset of the problem in the source, or -1. */
    public long offset() {
        return offset;
    }
}

package dev.dequant4j.internal.json;

import java.math.BigInteger;

/**
 * A JSON number. Integers that fit 64 bits are held exactly as a {@code long}; every other number keeps its source
 * text, so writing it back reproduces it character for character.
 */
public final class JsonNumber implements JsonValue {
    private final String text;
    private final long longValue;
    private final boolean isLong;

    private JsonNumber(String text, long longValue, boolean isLong) {
        this.text = text;
        this.longValue = longValue;
        this.isLong = isLong;
    }

    public static JsonNumber of(long value) {
        return new JsonNumber(null, value, true);
    }

    /** A number from its JSON text, which must already be valid RFC 8259 number syntax. */
    static JsonNumber ofText(String text) {
        return new JsonNumber(text, 0, false);
    }

    /** A number from a double, written as the shortest text that reads back as the same double. */
    public static JsonNumber of(double value) {
        if (!Double.isFinite(value)) {
            throw new JsonException("JSON cannot hold " + value);
        }
        return new JsonNumber(Double.toString(value), 0, false);
    }

    /** An unsigned 64-bit integer given as its bits, written exactly (values above 2^63 too). */
    public static JsonNumber ofUnsigned(long bits) {
        return bits >= 0 ? of(bits) : ofText(Long.toUnsignedString(bits));
    }

    /** A float, written as the shortest text that reads back as the same float (not its widened double). */
    public static JsonNumber of(float value) {
        if (!Float.isFinite(value)) {
            throw new JsonException("JSON cannot hold " + value);
        }
        return ofText(Float.toString(value));
    }

    /** True when the number is an integer that fits in a signed 64-bit long. */
    public boolean isLong() {
        return isLong;
    }

    /** True when the number has no fraction and no exponent in its text (it may be wider than 64 bits). */
    public boolean isIntegral() {
        return isLong || (text.indexOf('.') < 0 && text.indexOf('e') < 0 && text.indexOf('E') < 0);
    }

    public long longValue() {
        if (!isLong) {
            throw new JsonException("number " + text + " is not an integer in the 64-bit range");
        }
        return longValue;
    }

    public double doubleValue() {
        return isLong ? (double) longValue : Double.parseDouble(text);
    }

    public String text() {
        return isLong ? Long.toString(longValue) : text;
    }

    @Override
    public String typeName() {
        return "number";
    }

    @Override
    public Object toJava() {
        if (isLong) {
            return longValue;
        }
        return isIntegral() ? new BigInteger(text) : Double.parseDouble(text);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof JsonNumber n && text().equals(n.text());
    }

    @Override
    public int hashCode() {
        return text().hashCode();
    }

    @Override
    public String toString() {
        return text();
    }
}

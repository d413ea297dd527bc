package dev.dequant4j.internal.json;

/** A parsed JSON value. Objects keep their key order; numbers keep their source text. */
public sealed interface JsonValue permits JsonObject, JsonArray, JsonString, JsonNumber, JsonBoolean, JsonNull {

    /** A short name of the JSON type, for error messages. */
    String typeName();

    /** The value as a plain Java object: String, Boolean, Long, BigInteger, Double, List, Map or null. */
    Object toJava();
}

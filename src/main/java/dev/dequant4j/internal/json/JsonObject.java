package dev.dequant4j.internal.json;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/** A JSON object in source key order, with typed getters whose errors name the key. */
public record JsonObject(Map<String, JsonValue> members) implements JsonValue {
    public JsonObject {
        members = Collections.unmodifiableMap(members);
    }

    public static JsonObject empty() {
        return new JsonObject(new LinkedHashMap<>());
    }

    public boolean has(String key) {
        return members.containsKey(key);
    }

    public JsonValue get(String key) {
        return members.get(key);
    }

    public Set<String> keys() {
        return members.keySet();
    }

    public int size() {
        return members.size();
    }

    /** The value, or an error naming the missing key. */
    public JsonValue require(String key) {
        JsonValue v = members.get(key);
        if (v == null) {
            throw new JsonException("missing field '" + key + "'");
        }
        return v;
    }

    public String getString(String key) {
        JsonValue v = require(key);
        if (v instanceof JsonString s) {
            return s.value();
        }
        throw wrongType(key, "a string", v);
    }

    public Optional<String> optString(String key) {
        JsonValue v = members.get(key);
        if (v == null || v == JsonNull.NULL) {
            return Optional.empty();
        }
        if (v instanceof JsonString s) {
            return Optional.of(s.value());
        }
        throw wrongType(key, "a string", v);
    }

    public long getLong(String key) {
        JsonValue v = require(key);
        if (v instanceof JsonNumber n && n.isLong()) {
            return n.longValue();
        }
        throw wrongType(key, "an integer", v);
    }

    public double getDouble(String key) {
        JsonValue v = require(key);
        if (v instanceof JsonNumber n) {
            return n.doubleValue();
        }
        throw wrongType(key, "a number", v);
    }

    public boolean getBoolean(String key, boolean defaultValue) {
        JsonValue v = members.get(key);
        if (v == null || v == JsonNull.NULL) {
            return defaultValue;
        }
        if (v instanceof JsonBoolean b) {
            return b.value();
        }
        throw wrongType(key, "a boolean", v);
    }

    public JsonObject getObject(String key) {
        JsonValue v = require(key);
        if (v instanceof JsonObject o) {
            return o;
        }
        throw wrongType(key, "an object", v);
    }

    public Optional<JsonObject> optObject(String key) {
        JsonValue v = members.get(key);
        if (v == null || v == JsonNull.NULL) {
            return Optional.empty();
        }
        if (v instanceof JsonObject o) {
            return Optional.of(o);
        }
        throw wrongType(key, "an object", v);
    }

    public JsonArray getArray(String key) {
        JsonValue v = require(key);
        if (v instanceof JsonArray a) {
            return a;
        }
        throw wrongType(key, "an array", v);
    }

    private static JsonException wrongType(String key, String expected, JsonValue actual) {
        return new JsonException("field '" + key + "' must be " + expected + ", not " + describe(actual));
    }

    /** A value as an error message names it: its type, and a short quote of a string or number. */
    public static String describe(JsonValue v) {
        return switch (v) {
            case JsonString s -> "the string \"" + Json.abbreviate(s.value(), 40) + "\"";
            case JsonNumber n -> "the number " + Json.abbreviate(n.text(), 40);
            case JsonBoolean b -> b == JsonBoolean.TRUE ? "true" : "false";
            case JsonNull ignored -> "null";
            case JsonArray ignored -> "an array";
            case JsonObject ignored -> "an object";
        };
    }

    @Override
    public String typeName() {
        return "object";
    }

    @Override
    public Object toJava() {
        Map<String, Object> out = new LinkedHashMap<>();
        members.forEach((k, v) -> out.put(k, v.toJava()));
        return Collections.unmodifiableMap(out);
    }
}

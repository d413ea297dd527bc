package dev.dequant4j.internal.gguf;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * A model directory's tokenizer files by name, each parsed once, with the few Python semantics the converter's code
 * relies on (truthiness, {@code dict.get}) spelled out, so {@link GgufTokenizer} and {@link SpecialVocab} read like the
 * code they mirror. A value of a type the converter's code would crash on is refused, naming the file.
 */
final class TokenizerFiles {
    /** The largest tokenizer file read (Gemma 3's tokenizer.json is 33 MB). */
    static final long MAX_BYTES = Json.MAX_FILE_BYTES;

    private final Map<String, Path> files;
    private final Map<String, JsonObject> parsed = new HashMap<>();

    TokenizerFiles(Map<String, Path> files) {
        this.files = Map.copyOf(files);
    }

    boolean has(String name) {
        return files.containsKey(name);
    }

    Path path(String name) {
        return files.get(name);
    }

    /** The parsed JSON object in {@code name}, or null when there is no such file. */
    JsonObject json(String name) {
        Path p = files.get(name);
        if (p == null) {
            return null;
        }
        JsonObject o = parsed.get(name);
        if (o == null) {
            try {
                o = Json.readObject(p, MAX_BYTES);
            } catch (IOException e) {
                throw new Dequant4jException(Kind.IO, p, "cannot read: " + e.getMessage(), e);
            } catch (JsonException e) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, p, "invalid JSON: " + e.getMessage(), e);
            }
            parsed.put(name, o);
        }
        return o;
    }

    /** The whole file's bytes, at most {@code max}. */
    byte[] bytes(String name, long max) {
        Path p = files.get(name);
        try {
            long size = Files.size(p);
            if (size > max) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, p, "is " + size + " bytes, more than the "
                        + max + "-byte limit");
            }
            return Files.readAllBytes(p);
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, p, "cannot read: " + e.getMessage(), e);
        }
    }

    /** The file as Python's {@code open(encoding='utf-8').read()} gives it: strict UTF-8, universal newlines. */
    String text(String name) {
        byte[] b = bytes(name, MAX_BYTES);
        try {
            String s = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString();
            return s.replace("\r\n", "\n").replace('\r', '\n');
        } catch (CharacterCodingException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, files.get(name), "is not UTF-8 text");
        }
    }

    Dequant4jException corrupt(String name, String detail) {
        return new Dequant4jException(Kind.CORRUPT_INPUT, files.get(name), detail);
    }

    Dequant4jException unsupported(String name, String detail) {
        return new Dequant4jException(Kind.UNSUPPORTED_INPUT, files.get(name), detail);
    }

    /** Python's {@code bool(v)}; {@code null} stands for a missing key (None). */
    static boolean truthy(JsonValue v) {
        return switch (v) {
            case null -> false;
            case JsonNull ignored -> false;
            case JsonBoolean b -> b.value();
            case JsonString s -> !s.value().isEmpty();
            case JsonNumber n -> n.doubleValue() != 0;
            case JsonArray a -> a.size() > 0;
            case JsonObject o -> o.size() > 0;
        };
    }

    /** {@code v} as a Python str, or null when it is anything else. */
    static String str(JsonValue v) {
        return v instanceof JsonString s ? s.value() : null;
    }

    /** {@code v} as a Python int (a JSON integer, not 1.0 and not a boolean), or null. */
    static Long integer(JsonValue v) {
        if (v instanceof JsonNumber n && n.isLong() && n.text().chars().allMatch(c -> c == '-' || Character.isDigit(c))) {
            return n.longValue();
        }
        return null;
    }

    /** {@code v.get(key)} where the converter's code calls {@code .get} on it: it must be an object. */
    JsonValue get(String file, JsonValue v, String key) {
        if (v instanceof JsonObject o) {
            JsonValue r = o.get(key);
            return r == JsonNull.NULL ? null : r;
        }
        throw corrupt(file, "expected an object where '" + key + "' is looked up, found "
                + (v == null || v == JsonNull.NULL ? "nothing" : v.typeName()));
    }

    /** {@code v} where the converter iterates it as a list. */
    JsonArray list(String file, JsonValue v, String what) {
        if (v instanceof JsonArray a) {
            return a;
        }
        throw corrupt(file, what + " must be a list, not " + (v == null ? "null" : v.typeName()));
    }
}

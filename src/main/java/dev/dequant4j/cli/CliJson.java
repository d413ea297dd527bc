package dev.dequant4j.cli;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.Printable;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * What every {@code --json} run prints: exactly one object on standard output, success or not, whose first field
 * {@code schema_version} says which layout follows. Version 1: the fields of each command's summary (for
 * {@code export --dry-run}, {@code "dry_run": true} and the plan, {@link ExportCommand#plan}), or
 * {@code {"error": {"kind", "file", "tensor", "message"}}} where {@code kind} is a {@link Dequant4jException.Kind}
 * in lower case, {@code usage}, {@code out_of_memory} or {@code internal}, and {@code file} and {@code tensor} are strings or null.
 */
final class CliJson {
    static final int SCHEMA_VERSION = 1;

    /** A command whose {@code --json} flag makes failures print a JSON error object too. */
    interface Output {
        boolean json();
    }

    private CliJson() {}

    static void print(PrintWriter out, Map<String, JsonValue> fields) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("schema_version", JsonNumber.of(SCHEMA_VERSION));
        m.putAll(fields);
        // not through the sanitizing writer: the JSON writer escapes every control and non-ASCII character, so the
        // text stays exact and the terminal safe
        PrintWriter raw = Printable.raw(out);
        raw.println(Json.write(new JsonObject(m), Json.Style.PYTHON_INDENT2));
        raw.flush();
    }

    static void print(PrintWriter out, JsonObject body) {
        Map<String, JsonValue> fields = new LinkedHashMap<>();
        for (String k : body.keys()) {
            fields.put(k, body.get(k));
        }
        print(out, fields);
    }

    static void printError(PrintWriter out, String kind, String file, String tensor, String message) {
        Map<String, JsonValue> e = new LinkedHashMap<>();
        e.put("kind", new JsonString(kind));
        e.put("file", file == null ? JsonNull.NULL : new JsonString(file));
        e.put("tensor", tensor == null ? JsonNull.NULL : new JsonString(tensor));
        e.put("message", new JsonString(message));
        print(out, Map.of("error", new JsonObject(e)));
    }

    static void printError(PrintWriter out, Throwable ex, String message) {
        if (ex instanceof Dequant4jException d) {
            printError(out, d.kind().name().toLowerCase(Locale.ROOT), d.file().map(Object::toString).orElse(null),
                    d.tensor().orElse(null), message);
        } else {
            printError(out, ex instanceof IllegalArgumentException ? "usage" : "internal", null, null, message);
        }
    }

    /** A number, or null for NaN and infinities, which JSON cannot hold: a field keeps one type. */
    static JsonValue number(double v) {
        return Double.isFinite(v) ? JsonNumber.of(v) : JsonNull.NULL;
    }
}

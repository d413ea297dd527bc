package dev.dequant4j.cli;

import dev.dequant4j.internal.gguf.GgufFile;
import dev.dequant4j.internal.gguf.GgufMetadata;
import dev.dequant4j.internal.gguf.GgufType;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** {@code inspect} of a .gguf file: its metadata and tensors, as a table or as JSON. */
final class GgufInspect {
    /** Array elements shown in the table; --json has them all. */
    static final int SHOWN_ELEMENTS = 8;
    /** Characters of a string value shown in the table. */
    static final int SHOWN_CHARS = 80;

    private GgufInspect() {}

    static void print(GgufFile f, PrintWriter out) {
        Table kv = new Table("KEY", "TYPE", "VALUE");
        for (Map.Entry<String, GgufMetadata.Value> e : f.metadata().entries().entrySet()) {
            GgufMetadata.Value v = e.getValue();
            String type = v.type() == GgufType.ARRAY ? "ARRAY[" + v.elementType() + "]" : v.type().name();
            kv.add(e.getKey(), type, shown(v));
        }
        kv.print(out);
        out.println();
        Table ts = new Table("NAME", "TYPE", "SHAPE", "BYTES", "OFFSET");
        long bytes = 0;
        Map<String, Integer> types = new TreeMap<>();
        for (GgufFile.Tensor t : f.tensors().values()) {
            ts.add(t.name(), t.type().name(), Arrays.toString(t.ne()), Table.bytes(t.byteSize()),
                    Long.toString(t.offset()));
            bytes += t.byteSize();
            types.merge(t.type().name(), 1, Integer::sum);
        }
        ts.print(out);
        out.println();
        out.println("path:      " + f.path());
        out.println("format:    GGUF v" + f.version() + ", alignment " + f.alignment() + ", data at byte "
                + f.dataOffset());
        out.println("metadata:  " + f.metadata().entries().size() + " keys");
        out.println("tensors:   " + f.tensors().size() + " " + types + ", " + bytes + " bytes ("
                + Table.bytes(bytes) + "); shapes in ggml order, innermost dimension first");
    }

    private static String shown(GgufMetadata.Value v) {
        if (v.type() != GgufType.ARRAY) {
            return scalarText(v.type(), v.value());
        }
        List<String> items = new ArrayList<>();
        int n = length(v.value());
        for (int i = 0; i < Math.min(n, SHOWN_ELEMENTS); i++) {
            items.add(scalarText(v.elementType(), element(v.value(), i)));
        }
        return "[" + String.join(", ", items) + (n > SHOWN_ELEMENTS ? ", ... (" + n + " elements)" : "") + "]";
    }

    private static String scalarText(GgufType type, Object value) {
        return switch (type) {
            case STRING -> {
                String s = (String) value;
                yield '"' + (s.length() > SHOWN_CHARS ? s.substring(0, SHOWN_CHARS) + "...\" (" + s.length()
                        + " characters)" : s + '"');
            }
            case UINT64 -> Long.toUnsignedString((Long) value);
            default -> String.valueOf(value);
        };
    }

    static int length(Object array) {
        return switch (array) {
            case List<?> l -> l.size();
            case int[] a -> a.length;
            case long[] a -> a.length;
            case float[] a -> a.length;
            case double[] a -> a.length;
            case boolean[] a -> a.length;
            default -> throw new IllegalArgumentException(array.getClass().getName());
        };
    }

    static Object element(Object array, int i) {
        return switch (array) {
            case List<?> l -> l.get(i);
            case int[] a -> a[i];
            case long[] a -> a[i];
            case float[] a -> a[i];
            case double[] a -> a[i];
            case boolean[] a -> a[i];
            default -> throw new IllegalArgumentException(array.getClass().getName());
        };
    }

    static JsonObject json(GgufFile f) {
        Map<String, JsonValue> root = new LinkedHashMap<>();
        root.put("path", new JsonString(f.path().toString()));
        root.put("format", new JsonString("gguf"));
        root.put("version", JsonNumber.of(f.version()));
        root.put("alignment", JsonNumber.of(f.alignment()));
        root.put("data_offset", JsonNumber.of(f.dataOffset()));
        List<JsonValue> metadata = new ArrayList<>();
        for (Map.Entry<String, GgufMetadata.Value> e : f.metadata().entries().entrySet()) {
            GgufMetadata.Value v = e.getValue();
            Map<String, JsonValue> m = new LinkedHashMap<>();
            m.put("key", new JsonString(e.getKey()));
            m.put("type", new JsonString(v.type().name()));
            if (v.type() == GgufType.ARRAY) {
                m.put("element_type", new JsonString(v.elementType().name()));
                List<JsonValue> items = new ArrayList<>();
                for (int i = 0; i < length(v.value()); i++) {
                    items.add(scalarJson(v.elementType(), element(v.value(), i)));
                }
                m.put("value", new JsonArray(items));
            } else {
                m.put("value", scalarJson(v.type(), v.value()));
            }
            metadata.add(new JsonObject(m));
        }
        root.put("metadata", new JsonArray(metadata));
        List<JsonValue> tensors = new ArrayList<>();
        for (GgufFile.Tensor t : f.tensors().values()) {
            Map<String, JsonValue> m = new LinkedHashMap<>();
            m.put("name", new JsonString(t.name()));
            m.put("type", new JsonString(t.type().name()));
            m.put("ne", InspectCommand.longs(t.ne()));
            m.put("offset", JsonNumber.of(t.offset()));
            m.put("bytes", JsonNumber.of(t.byteSize()));
            tensors.add(new JsonObject(m));
        }
        root.put("tensors", new JsonArray(tensors));
        return new JsonObject(root);
    }

    /** Non-finite floats, which JSON cannot hold, become the strings "nan", "inf" and "-inf". */
    private static JsonValue scalarJson(GgufType type, Object value) {
        return switch (type) {
            case STRING -> new JsonString((String) value);
            case BOOL -> JsonBoolean.of((Boolean) value);
            case UINT64 -> JsonNumber.ofUnsigned((Long) value);
            case FLOAT32 -> Float.isFinite((Float) value) ? JsonNumber.of((float) (Float) value)
                    : new JsonString(nonFinite((Float) value));
            case FLOAT64 -> Double.isFinite((Double) value) ? JsonNumber.of((double) (Double) value)
                    : new JsonString(nonFinite((Double) value));
            default -> JsonNumber.of(((Number) value).longValue());
        };
    }

    private static String nonFinite(double v) {
        return Double.isNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";
    }
}

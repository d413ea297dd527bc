package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Fixtures;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code inspect} shows, per logical tensor of a bitsandbytes checkpoint, its kind, blocksize, double quant,
 * quant-state dtype and logical shape, as a table and as JSON; the expected values come from manifest.json and the
 * unquantized originals.
 */
class InspectQuantizedTest {
    /** What one logical tensor should show: kind, dtype, shape, blocksize ("-" if none), DQ ("yes"/"no"/"-"). */
    private record Row(String kind, String dtype, String shape, String blocksize, String dq) {}

    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    private static JsonObject manifest() {
        try {
            return Json.readObject(Fixtures.root().resolve("manifest.json"), 1 << 24);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private static String dtypeName(String torch) {
        return switch (torch.replace("torch.", "")) {
            case "bfloat16" -> "BF16";
            case "float16" -> "F16";
            default -> throw new IllegalArgumentException("test setup: " + torch);
        };
    }

    /** Expected rows: quantized linears from the manifest, everything else from the original model. */
    private static Map<String, Row> expected(String checkpoint) {
        JsonObject all = manifest();
        JsonObject m = all.getObject("checkpoints").getObject(checkpoint);
        String model = m.getString("model");
        JsonObject quant = m.getObject("quantization");
        boolean fourBit = quant.getString("kind").equals("4bit");
        String kind = fourBit ? quant.getString("quant_type").toUpperCase(java.util.Locale.ROOT) : "INT8";
        String dtype = fourBit ? dtypeName(all.getObject("models").getObject(model).getString("dtype")) : "F32";
        Map<String, Row> rows = new HashMap<>();
        JsonObject tensors = m.getObject("tensors");
        for (String name : tensors.keys()) {
            rows.put(name, new Row(kind, dtype, shape(tensors.getObject(name).getArray("shape")),
                    fourBit ? Long.toString(quant.getLong("blocksize")) : "-",
                    fourBit ? (quant.getBoolean("double_quant", false) ? "yes" : "no") : "-"));
        }
        Path original = Fixtures.root().resolve("expected/models").resolve(model).resolve("original.safetensors");
        try (Checkpoint o = Checkpoint.open(original)) {
            for (TensorInfo t : o.tensors()) {
                boolean tiedLmHead = checkpoint.equals("llama-h64-mixed") && t.name().equals("lm_head.weight");
                if (!rows.containsKey(t.name()) && !tiedLmHead) {
                    rows.put(t.name(), new Row("PLAIN", t.dtype().name(), java.util.Arrays.toString(t.shape()), "-",
                            "-"));
                }
            }
        }
        return rows;
    }

    private static String shape(JsonArray a) {
        List<String> dims = new ArrayList<>();
        for (JsonValue d : a.values()) {
            dims.add(Long.toString(((JsonNumber) d).longValue()));
        }
        return "[" + String.join(", ", dims) + "]";
    }

    private static String run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(args, new PrintWriter(out), new PrintWriter(err));
        assertEquals(0, code, err.toString());
        assertEquals("", err.toString());
        return out.toString();
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void tableShowsQuantizationPerLogicalTensor(String name) {
        Map<String, Row> expected = expected(name);
        String[] lines = run("inspect", Fixtures.checkpoint(name).toString()).split("\n");
        String header = lines[0];
        List<String> columns = List.of("NAME", "KIND", "DTYPE", "SHAPE", "BLOCKSIZE", "DQ", "STORED");
        int[] at = new int[columns.size()];
        for (int i = 0; i < at.length; i++) {
            at[i] = header.indexOf(columns.get(i));
            assertTrue(at[i] >= 0 && (i == 0 || at[i] > at[i - 1]), "column " + columns.get(i) + " in " + header);
        }
        Set<String> seen = new HashSet<>();
        for (int l = 1; l < lines.length && !lines[l].isBlank(); l++) {
            String line = lines[l];
            List<String> cells = new ArrayList<>();
            for (int i = 0; i < at.length; i++) {
                cells.add(line.substring(at[i], i + 1 < at.length ? at[i + 1] : line.length()).strip());
            }
            Row want = expected.get(cells.get(0));
            assertTrue(want != null, "unexpected row " + line);
            assertEquals(want, new Row(cells.get(1), cells.get(2), cells.get(3), cells.get(4), cells.get(5)),
                    cells.get(0));
            assertTrue(seen.add(cells.get(0)), "listed twice: " + cells.get(0));
        }
        assertEquals(expected.keySet(), seen);
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void jsonShowsQuantizationPerLogicalTensor(String name) {
        Map<String, Row> expected = expected(name);
        JsonObject root = (JsonObject) Json.parse(run("inspect", "--json", Fixtures.checkpoint(name).toString()));
        Set<String> seen = new HashSet<>();
        Set<String> components = new HashSet<>();
        for (JsonValue v : root.getArray("tensors").values()) {
            JsonObject t = (JsonObject) v;
            String tensor = t.getString("name");
            Row want = expected.get(tensor);
            assertTrue(want != null, "unexpected tensor " + tensor);
            JsonValue bs = t.get("blocksize");
            JsonValue dq = t.get("double_quant");
            Row got = new Row(t.getString("kind"), t.getString("dtype"), shape(t.getArray("shape")), bs == JsonNull.NULL ? "-" : Long.toString(((JsonNumber) bs).longValue()),
                    dq == JsonNull.NULL ? "-" : ((JsonBoolean) dq).value() ? "yes" : "no");
            assertEquals(want, got, tensor);
            assertTrue(seen.add(tensor));
            for (JsonValue c : t.getArray("components").values()) {
                components.add(((JsonString) c).value());
            }
            assertEquals(tensor, ((JsonString) t.getArray("components").get(0)).value());
        }
        assertEquals(expected.keySet(), seen);
        // every stored key is a component of exactly one listed tensor
        JsonObject summary = root.getObject("summary");
        assertEquals(summary.getLong("stored_tensors"), components.size());
        assertEquals(expected.size(), summary.getLong("logical_tensors"));
    }
}

package dev.dequant4j.cli;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.QuantKind;
import dev.dequant4j.StoredTensor;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.gguf.GgufFile;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

@Command(name = "inspect", mixinStandardHelpOptions = true,
        description = {"Lists the tensors of a model directory or .safetensors file, with their quantization.",
            "For a .gguf file, lists its metadata and tensors.",
            "For a LoRA adapter directory, shows r, alpha, scaling, DoRA and the target of every module."})
final class InspectCommand implements Callable<Integer>, CliJson.Output {
    @Parameters(paramLabel = "PATH",
            description = "A model directory, a .safetensors or .gguf file, or a LoRA adapter directory.")
    Path path;

    @Option(names = "--json", description = "Print JSON instead of a table.")
    boolean json;

    @Spec
    CommandSpec spec;

    @Override
    public boolean json() {
        return json;
    }

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        if (GgufFile.looksLikeGguf(path)) {
            try (GgufFile f = GgufFile.open(path)) {
                if (json) {
                    CliJson.print(out, GgufInspect.json(f));
                } else {
                    GgufInspect.print(f, out);
                }
            }
            out.flush();
            return 0;
        }
        if (AdapterInspect.isAdapter(path)) {
            try (LoraAdapter a = LoraAdapter.open(path)) {
                if (json) {
                    CliJson.print(out, AdapterInspect.json(a));
                } else {
                    AdapterInspect.print(a, out);
                }
            }
            out.flush();
            return 0;
        }
        try (Checkpoint c = Checkpoint.open(path)) {
            if (json) {
                CliJson.print(out, checkpointJson(c));
            } else {
                printCheckpoint(c, out);
            }
        }
        out.flush();
        return 0;
    }

    /** Which bitsandbytes keys are present among the stored tensors. */
    static Map<String, Integer> bnbKeys(List<StoredTensor> stored) {
        Map<String, Integer> keys = new LinkedHashMap<>();
        for (String k : new String[] {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
            ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4", ".SCB", ".weight_format"}) {
            keys.put(k, 0);
        }
        for (StoredTensor s : stored) {
            for (Map.Entry<String, Integer> e : keys.entrySet()) {
                if (s.name().endsWith(e.getKey())) {
                    e.setValue(e.getValue() + 1);
                }
            }
        }
        return keys;
    }

    private static void printCheckpoint(Checkpoint c, PrintWriter out) {
        Table t = new Table("NAME", "KIND", "DTYPE", "SHAPE", "BLOCKSIZE", "DQ", "STORED");
        for (TensorInfo i : c.tensors()) {
            boolean fourBit = i.kind() == QuantKind.NF4 || i.kind() == QuantKind.FP4;
            t.add(i.name(), i.kind().name(), i.dtype().name(), Arrays.toString(i.shape()),
                    fourBit ? Integer.toString(i.blocksize()) : "-", fourBit ? (i.doubleQuant() ? "yes" : "no") : "-",
                    i.storedDtype() + " " + Table.bytes(i.storedBytes()));
        }
        t.print(out);
        out.println();
        List<StoredTensor> stored = c.storedTensors();
        long bytes = 0;
        Map<DType, Integer> dtypes = new TreeMap<>();
        for (StoredTensor s : stored) {
            bytes += s.byteSize();
            dtypes.merge(s.dtype(), 1, Integer::sum);
        }
        Map<QuantKind, Integer> kinds = new EnumMap<>(QuantKind.class);
        for (TensorInfo i : c.tensors()) {
            kinds.merge(i.kind(), 1, Integer::sum);
        }
        out.println("path:      " + c.path());
        out.println("files:     " + c.files().size() + " " + c.files().stream().map(p -> p.getFileName().toString())
                .toList());
        out.println("tensors:   " + c.tensors().size() + " logical " + kinds + ", " + stored.size() + " stored");
        out.println("bytes:     " + bytes + " (" + Table.bytes(bytes) + ") of tensor data");
        out.println("dtypes:    " + dtypes);
        Map<String, Integer> keys = bnbKeys(stored);
        List<String> present = new ArrayList<>();
        keys.forEach((k, n) -> {
            if (n > 0) {
                present.add(k + " x" + n);
            }
        });
        out.println("bitsandbytes keys: " + (present.isEmpty() ? "none (not a bitsandbytes checkpoint)"
                : String.join(", ", present)));
    }

    static JsonObject checkpointJson(Checkpoint c) {
        Map<String, JsonValue> root = new LinkedHashMap<>();
        root.put("path", new JsonString(c.path().toString()));
        List<JsonValue> files = new ArrayList<>();
        for (Path p : c.files()) {
            files.add(new JsonString(p.getFileName().toString()));
        }
        root.put("files", new JsonArray(files));
        List<JsonValue> tensors = new ArrayList<>();
        for (TensorInfo i : c.tensors()) {
            Map<String, JsonValue> t = new LinkedHashMap<>();
            t.put("name", new JsonString(i.name()));
            t.put("kind", new JsonString(i.kind().name()));
            t.put("dtype", new JsonString(i.dtype().name()));
            t.put("shape", longs(i.shape()));
            t.put("stored_dtype", new JsonString(i.storedDtype().name()));
            t.put("stored_bytes", JsonNumber.of(i.storedBytes()));
            boolean fourBit = i.kind() == QuantKind.NF4 || i.kind() == QuantKind.FP4;
            t.put("blocksize", fourBit ? JsonNumber.of(i.blocksize()) : JsonNull.NULL);
            t.put("double_quant", fourBit ? JsonBoolean.of(i.doubleQuant()) : JsonNull.NULL);
            List<JsonValue> comps = new ArrayList<>();
            for (String s : i.components()) {
                comps.add(new JsonString(s));
            }
            t.put("components", new JsonArray(comps));
            tensors.add(new JsonObject(t));
        }
        root.put("tensors", new JsonArray(tensors));
        List<StoredTensor> stored = c.storedTensors();
        long bytes = 0;
        Map<String, Integer> dtypes = new TreeMap<>();
        for (StoredTensor s : stored) {
            bytes += s.byteSize();
            dtypes.merge(s.dtype().name(), 1, Integer::sum);
        }
        Map<String, JsonValue> summary = new LinkedHashMap<>();
        summary.put("logical_tensors", JsonNumber.of(c.tensors().size()));
        summary.put("stored_tensors", JsonNumber.of(stored.size()));
        summary.put("bytes", JsonNumber.of(bytes));
        Map<String, JsonValue> dt = new LinkedHashMap<>();
        dtypes.forEach((k, v) -> dt.put(k, JsonNumber.of(v)));
        summary.put("dtypes", new JsonObject(dt));
        Map<String, JsonValue> kinds = new LinkedHashMap<>();
        for (QuantKind k : QuantKind.values()) {
            kinds.put(k.name(), JsonNumber.of(c.tensors().stream().filter(i -> i.kind() == k).count()));
        }
        summary.put("kinds", new JsonObject(kinds));
        Map<String, JsonValue> keys = new LinkedHashMap<>();
        bnbKeys(stored).forEach((k, v) -> keys.put(k, JsonNumber.of(v)));
        summary.put("bitsandbytes_keys", new JsonObject(keys));
        summary.put("bitsandbytes", JsonBoolean.of(keys.values().stream()
                .anyMatch(v -> ((JsonNumber) v).longValue() > 0)));
        root.put("summary", new JsonObject(summary));
        return new JsonObject(root);
    }

    static JsonArray longs(long[] a) {
        List<JsonValue> l = new ArrayList<>(a.length);
        for (long v : a) {
            l.add(JsonNumber.of(v));
        }
        return new JsonArray(l);
    }
}

package dev.dequant4j.cli;

import dev.dequant4j.DType;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.lora.AdapterJson;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** {@code inspect <adapter-dir>}: what a LoRA adapter will do when merged, module by module. */
final class AdapterInspect {
    private AdapterInspect() {}

    /** True for a directory that holds a PEFT adapter. */
    static boolean isAdapter(Path path) {
        return Files.isDirectory(path) && Files.isRegularFile(path.resolve("adapter_config.json"));
    }

    static void print(LoraAdapter a, PrintWriter out) {
        out.println("adapter:   " + a.name() + " (" + a.directory() + ")");
        out.println("peft:      LORA" + a.peftVersion().map(v -> ", peft_version " + v).orElse("")
                + a.baseModel().map(b -> ", base model " + b).orElse(""));
        out.println("default:   r=" + a.r() + ", lora_alpha=" + number(a.alpha()) + ", scaling=" + a.scaling()
                + (a.useRslora() ? " (rsLoRA: alpha/sqrt(r))" : " (alpha/r)"));
        out.println("dora:      " + yesNo(a.useDora()) + "    fan_in_fan_out: " + yesNo(a.fanInFanOut()));
        out.println("targets:   " + a.targetModulesRegex().map(r -> "regex " + r)
                .orElse(a.targetModules().isEmpty() ? "-" : String.join(", ", a.targetModules())));
        if (!a.rankPattern().isEmpty()) {
            out.println("rank_pattern:  " + pattern(a.rankPattern()));
        }
        if (!a.alphaPattern().isEmpty()) {
            out.println("alpha_pattern: " + pattern(a.alphaPattern()));
        }
        Map<DType, Integer> dtypes = new TreeMap<>();
        int tensors = 0;
        for (LoraAdapter.Module m : a.modules()) {
            dtypes.merge(m.dtype(), m.keys().size(), Integer::sum);
            tensors += m.keys().size();
        }
        out.println("tensors:   " + tensors + " " + dtypes + " in " + a.modules().size() + " modules");
        for (String w : a.warnings()) {
            out.println("warning:   " + w);
        }
        out.println();
        Table t = new Table("TENSOR", "KIND", "R", "ALPHA", "SCALING", "DORA", "DTYPE");
        for (LoraAdapter.Module m : a.modules()) {
            boolean scaled = m.kind() == LoraAdapter.Kind.LINEAR || m.kind() == LoraAdapter.Kind.EMBEDDING
                    || m.kind() == LoraAdapter.Kind.LORA_BIAS || m.kind() == LoraAdapter.Kind.EXPERTS;
            t.add(m.tensor(), m.kind().name(), scaled ? Integer.toString(m.r()) : "-",
                    scaled ? number(m.alpha()) : "-", scaled ? Float.toString(m.scaling()) : "-",
                    m.dora() ? "yes" : "-", m.dtype().name());
        }
        t.print(out);
    }

    static JsonObject json(LoraAdapter a) {
        Map<String, JsonValue> root = new LinkedHashMap<>();
        root.put("adapter", new JsonString(a.name()));
        root.put("path", new JsonString(a.directory().toString()));
        root.put("peft_version", a.peftVersion().<JsonValue>map(JsonString::new).orElse(JsonNull.NULL));
        root.put("base_model_name_or_path", a.baseModel().<JsonValue>map(JsonString::new).orElse(JsonNull.NULL));
        root.put("r", JsonNumber.of(a.r()));
        root.put("lora_alpha", JsonNumber.of(a.alpha()));
        root.put("scaling", JsonNumber.of((double) a.scaling()));
        root.put("use_rslora", JsonBoolean.of(a.useRslora()));
        root.put("use_dora", JsonBoolean.of(a.useDora()));
        root.put("fan_in_fan_out", JsonBoolean.of(a.fanInFanOut()));
        root.put("target_modules", a.targetModulesRegex().<JsonValue>map(JsonString::new)
                .orElse(strings(a.targetModules())));
        Map<String, JsonValue> rp = new LinkedHashMap<>();
        a.rankPattern().forEach((k, v) -> rp.put(k, JsonNumber.of(v)));
        root.put("rank_pattern", new JsonObject(rp));
        Map<String, JsonValue> ap = new LinkedHashMap<>();
        a.alphaPattern().forEach((k, v) -> ap.put(k, JsonNumber.of(v)));
        root.put("alpha_pattern", new JsonObject(ap));
        List<JsonValue> modules = new ArrayList<>();
        for (LoraAdapter.Module m : a.modules()) {
            modules.add(AdapterJson.module(m, m.tensor()));
        }
        root.put("modules", new JsonArray(modules));
        root.put("warnings", strings(a.warnings()));
        return new JsonObject(root);
    }

    private static JsonArray strings(List<String> l) {
        List<JsonValue> out = new ArrayList<>();
        for (String s : l) {
            out.add(new JsonString(s));
        }
        return new JsonArray(out);
    }

    /** A pattern dict in file order (the first matching key wins), values as PEFT would print them. */
    private static String pattern(Map<String, ? extends Number> p) {
        List<String> parts = new ArrayList<>();
        p.forEach((k, v) -> parts.add(k + ": " + number(v.doubleValue())));
        return "{" + String.join(", ", parts) + "}";
    }

    private static String number(double d) {
        return d == Math.rint(d) && Math.abs(d) < 1e15 ? Long.toString((long) d) : Double.toString(d);
    }

    private static String yesNo(boolean b) {
        return b ? "yes" : "no";
    }
}

package dev.dequant4j.internal.lora;

import dev.dequant4j.LoraAdapter;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** One adapter module as JSON, the same in {@code inspect --json} and in an export's manifest. */
public final class AdapterJson {
    private AdapterJson() {}

    /**
     * @param tensor the base tensor it changes: as the adapter names it, or as a merge plan resolved it
     */
    public static JsonObject module(LoraAdapter.Module m, String tensor) {
        Map<String, JsonValue> o = new LinkedHashMap<>();
        o.put("module", new JsonString(m.module()));
        o.put("tensor", new JsonString(tensor));
        o.put("kind", new JsonString(m.kind().name()));
        o.put("r", JsonNumber.of(m.r()));
        o.put("lora_alpha", JsonNumber.of(m.alpha()));
        o.put("scaling", JsonNumber.of((double) m.scaling()));
        o.put("dora", JsonBoolean.of(m.dora()));
        o.put("dtype", new JsonString(m.dtype().name()));
        List<JsonValue> keys = new ArrayList<>();
        for (String k : m.keys()) {
            keys.add(new JsonString(k));
        }
        o.put("keys", new JsonArray(keys));
        return new JsonObject(o);
    }
}

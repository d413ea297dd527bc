package dev.dequant4j.internal.export;

import dev.dequant4j.DType;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The config.json of a dequantized model: {@code quantization_config} removed wherever it appears (VLM sub-configs
 * carry their own copy), the dtype key set to the output dtype (whichever of {@code torch_dtype}/{@code dtype} the
 * source used, {@code torch_dtype} if neither, which every transformers version reads), everything else unchanged
 * and in order.
 */
public final class ConfigRewriter {
    private ConfigRewriter() {}

    /** The model's own dtype from config.json ({@code torch_dtype} or {@code dtype}), if it names a float type. */
    public static Optional<DType> modelDtype(JsonObject config) {
        if (config == null) {
            return Optional.empty();
        }
        for (String key : new String[] {"torch_dtype", "dtype"}) {
            if (config.get(key) instanceof JsonString s) {
                Optional<DType> d = DType.fromTorchName(s.value()).filter(DType::isOutputType);
                if (d.isPresent()) {
                    return d;
                }
            }
        }
        if (config.get("text_config") instanceof JsonObject text) {
            return modelDtype(text);
        }
        return Optional.empty();
    }

    /**
     * @param untieEmbeddings set {@code tie_word_embeddings} to false, also in {@code text_config} (an adapter changed one side
     *                        of a tied embedding and lm_head)
     * @param vocabSize       the vocabulary size an adapter resized the model to, or -1: set where the config
     *                        gives {@code vocab_size} (the top level and/or {@code text_config}), else at the top
     */
    public static byte[] rewrite(JsonObject config, DType dtype, boolean untieEmbeddings, long vocabSize) {
        JsonObject out = (JsonObject) strip(config);
        Map<String, JsonValue> m = new LinkedHashMap<>(out.members());
        if (vocabSize >= 0) {
            JsonNumber v = JsonNumber.of(vocabSize);
            boolean inText = m.get("text_config") instanceof JsonObject t && t.has("vocab_size");
            if (inText) {
                Map<String, JsonValue> text = new LinkedHashMap<>(((JsonObject) m.get("text_config")).members());
                text.put("vocab_size", v);
                m.put("text_config", new JsonObject(text));
            }
            if (m.containsKey("vocab_size") || !inText) {
                m.put("vocab_size", v);
            }
        }
        boolean hasTorch = m.containsKey("torch_dtype");
        boolean hasDtype = m.containsKey("dtype");
        JsonString name = new JsonString(dtype.torchName());
        if (hasTorch || !hasDtype) {
            m.put("torch_dtype", name);
        }
        if (hasDtype) {
            m.put("dtype", name);
        }
        setSubConfigDtypes(m, name);
        if (untieEmbeddings) {
            m.put("tie_word_embeddings", JsonBoolean.FALSE);
            // a multimodal config (Gemma 3) says it again for its language model
            if (m.get("text_config") instanceof JsonObject text && text.has("tie_word_embeddings")) {
                Map<String, JsonValue> t = new LinkedHashMap<>(text.members());
                t.put("tie_word_embeddings", JsonBoolean.FALSE);
                m.put("text_config", new JsonObject(t));
            }
        }
        return (Json.write(new JsonObject(m), Json.Style.PYTHON_INDENT2) + "\n").getBytes(StandardCharsets.UTF_8);
    }

    /** Sub-configs (text_config, vision_config, ...) that name a dtype get the output dtype too. */
    private static void setSubConfigDtypes(Map<String, JsonValue> m, JsonString name) {
        for (Map.Entry<String, JsonValue> e : m.entrySet()) {
            if (e.getValue() instanceof JsonObject sub && e.getKey().endsWith("_config")
                    && (sub.has("torch_dtype") || sub.has("dtype"))) {
                Map<String, JsonValue> s = new LinkedHashMap<>(sub.members());
                for (String k : new String[] {"torch_dtype", "dtype"}) {
                    if (s.get(k) instanceof JsonString) {
                        s.put(k, name);
                    }
                }
                e.setValue(new JsonObject(s));
            }
        }
    }

    private static JsonValue strip(JsonValue v) {
        if (v instanceof JsonObject o) {
            Map<String, JsonValue> m = new LinkedHashMap<>();
            for (Map.Entry<String, JsonValue> e : o.members().entrySet()) {
                if (e.getKey().equals("quantization_config") || e.getKey().equals("_pre_quantization_dtype")) {
                    continue;
                }
                m.put(e.getKey(), strip(e.getValue()));
            }
            return new JsonObject(m);
        }
        if (v instanceof JsonArray a) {
            List<JsonValue> l = new ArrayList<>(a.size());
            for (JsonValue x : a.values()) {
                l.add(strip(x));
            }
            return new JsonArray(l);
        }
        return v;
    }
}

package dev.dequant4j.internal.bnb;

import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.util.Optional;

/**
 * Shapes of Llama-style linear weights derived from config.json, for bitsandbytes 0.41.2 quant states that wrote
 * {@code "shape": null}. Only the module names whose shape the config determines are derived; anything else is
 * left to the caller to refuse.
 */
final class LegacyShapes {
    private LegacyShapes() {}

    static Optional<long[]> fromConfig(JsonObject config, String weightName) {
        if (config == null || !weightName.endsWith(".weight")) {
            return Optional.empty();
        }
        JsonObject c = config;
        if (config.has("text_config") && !config.has("hidden_size")) {
            try {
                c = config.getObject("text_config");
            } catch (JsonException e) {
                return Optional.empty();
            }
        }
        String module = weightName.substring(0, weightName.length() - ".weight".length());
        String leaf = module.substring(module.lastIndexOf('.') + 1);
        Long hidden = integer(c, "hidden_size");
        if (hidden == null) {
            return Optional.empty();
        }
        Long heads = integer(c, "num_attention_heads");
        Long kvHeads = integer(c, "num_key_value_heads");
        if (kvHeads == null) {
            kvHeads = heads;
        }
        Long headDim = integer(c, "head_dim");
        if (headDim == null && heads != null && heads > 0) {
            headDim = hidden / heads;
        }
        Long inter = integer(c, "intermediate_size");
        long[] shape;
        try {
            shape = switch (leaf) {
                case "q_proj" -> heads == null || headDim == null ? null
                        : new long[] {Math.multiplyExact(heads, headDim), hidden};
                case "k_proj", "v_proj" -> kvHeads == null || headDim == null ? null
                        : new long[] {Math.multiplyExact(kvHeads, headDim), hidden};
                case "o_proj" -> heads == null || headDim == null ? null
                        : new long[] {hidden, Math.multiplyExact(heads, headDim)};
                case "gate_proj", "up_proj" -> inter == null ? null : new long[] {inter, hidden};
                case "down_proj" -> inter == null ? null : new long[] {hidden, inter};
                default -> null;
            };
            if (shape != null) {
                Math.multiplyExact(shape[0], shape[1]);
            }
        } catch (ArithmeticException e) {
            // sizes in a hostile config whose product overflows 64 bits determine no shape
            return Optional.empty();
        }
        return Optional.ofNullable(shape);
    }

    private static Long integer(JsonObject c, String key) {
        JsonValue v = c.get(key);
        return v instanceof JsonNumber n && n.isLong() && n.longValue() > 0 ? n.longValue() : null;
    }
}

package dev.dequant4j.internal.lora;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One tensor key of a PEFT adapter file, taken apart (peft {@code utils/save_and_load.py::get_peft_model_state_dict},
 * {@code tuners/tuners_utils.py::_remove_adapter_name_from_state_dict_key}). PEFT saves keys as
 * {@code base_model.model.<module path>.<parameter>} with the adapter name removed; files written by other tools
 * sometimes keep the adapter name ({@code lora_A.default.weight}) or lack the prefix, and both are accepted.
 *
 * @param key the key as stored
 * @param role what the tensor is
 * @param module the module path (e.g. {@code model.layers.0.self_attn.q_proj}), or for {@link Role#FULL} the base
 *               tensor it replaces (e.g. {@code model.norm.weight}); {@code .base_layer} and the
 *               {@code modules_to_save.<adapter>} wrapper part are removed
 * @param adapterName the adapter name still in the key, or null (the normal case)
 * @param wrapperDepth for lora_A/lora_B keys, how many {@code .base_layer} parts stood right before the LoRA part:
 *                     PEFT nests one {@code ParamWrapper} per parameter targeted on the same module
 *                     ({@code target_parameters}), so {@code experts.base_layer.lora_A} belongs to the inner wrapper
 *                     and {@code experts.lora_A} to the outer one; 0 for every other key
 */
public record AdapterKey(String key, Role role, String module, String adapterName, int wrapperDepth) {
    /** The kinds of adapter tensors. */
    public enum Role {
        /** {@code lora_A.weight} {@code [r, in]}. */
        LORA_A,
        /** {@code lora_B.weight} {@code [out, r]}. */
        LORA_B,
        /** {@code lora_B.bias} {@code [out]} (config {@code lora_bias}). */
        LORA_B_BIAS,
        /** {@code lora_embedding_A} {@code [r, num_embeddings]} (no {@code .weight}). */
        EMBEDDING_A,
        /** {@code lora_embedding_B} {@code [embedding_dim, r]} (no {@code .weight}). */
        EMBEDDING_B,
        /** DoRA {@code lora_magnitude_vector} {@code [out]} (no {@code .weight}). */
        MAGNITUDE,
        /** {@code token_adapter.trainable_tokens_delta} {@code [n, dim]}: replacement rows. */
        TOKENS,
        /** A whole tensor that replaces the base tensor: modules_to_save, saved embedding layers, biases. */
        FULL,
        /** Training-only state of a LoRA variant (VeLoRA, MonteCLoRA) that takes no part in the merge. */
        IGNORED,
        /**
         * A modules_to_save wrapper's copy ({@code X.modules_to_save.weight}, {@code X.original_module.weight}) saved
         * beside the replacement {@code X.weight}; {@link #module} is the tensor that replacement replaces.
         */
        WRAPPER_COPY
    }

    static final String PREFIX = "base_model.model.";
    // A key is a name, as PEFT handles it with string operations: "." in these patterns is any character, CR,
    // U+0085, U+2028 and U+2029 included (Java's "." without DOTALL stops at them).
    private static final Pattern LINEAR =
            Pattern.compile("(.+)\\.lora_([AB])(?:\\.([^.]+))?\\.(weight|bias)", Pattern.DOTALL);
    private static final Pattern EMBEDDING =
            Pattern.compile("(.+)\\.lora_embedding_([AB])(?:\\.([^.]+))?", Pattern.DOTALL);
    private static final Pattern MAGNITUDE_KEY =
            Pattern.compile("(.+)\\.lora_magnitude_vector((?:\\.[^.]+)*)", Pattern.DOTALL);
    private static final Pattern TOKENS_KEY =
            Pattern.compile("(.+)\\.token_adapter\\.trainable_tokens_delta(?:\\.([^.]+))?", Pattern.DOTALL);
    private static final Pattern LORA_PART =
            Pattern.compile("(^|.*\\.)lora_[A-Za-z_]*(\\..*|$)", Pattern.DOTALL);
    private static final Pattern VELORA_EMBED =
            Pattern.compile(".*\\.lora_velora_embed(\\.[^.]+)?", Pattern.DOTALL);
    private static final Pattern MODULES_TO_SAVE = Pattern.compile("\\.modules_to_save\\.[^.]+\\.");
    // save_embedding_layers (PEFT's default "auto" when the vocabulary was resized) saves a modules_to_save
    // wrapper's whole state dict: beside X.weight, the copy X.modules_to_save.weight and the frozen original
    // X.original_module.weight. PEFT's loader maps them to no parameter and uses X.weight.
    private static final Pattern WRAPPER_COPY =
            Pattern.compile(".+\\.(?:modules_to_save|original_module)\\.[^.]+", Pattern.DOTALL);

    /**
     * Parses a key, or returns null if it is a LoRA key of a form dequant4j does not know (the caller reports it).
     *
     * @param velora whether the config enables VeLoRA (its {@code lora_velora_embed} buffers are ignored)
     * @param monteclora whether the config enables MonteCLoRA (its {@code lora_monteclora_sampler} state is ignored)
     */
    public static AdapterKey parse(String key, boolean velora, boolean monteclora) {
        String k = key.startsWith(PREFIX) ? key.substring(PREFIX.length()) : key;
        if ((velora && VELORA_EMBED.matcher(k).matches())
                || (monteclora && k.contains(".lora_monteclora_sampler."))) {
            return new AdapterKey(key, Role.IGNORED, k, null, 0);
        }
        Matcher m = LINEAR.matcher(k);
        if (m.matches()) {
            boolean bias = m.group(4).equals("bias");
            if (m.group(2).equals("A") && bias) {
                return null;
            }
            Role role = m.group(2).equals("A") ? Role.LORA_A : bias ? Role.LORA_B_BIAS : Role.LORA_B;
            return new AdapterKey(key, role, stripBaseLayer(m.group(1)), m.group(3), trailingBaseLayers(m.group(1)));
        }
        m = EMBEDDING.matcher(k);
        if (m.matches()) {
            return new AdapterKey(key, m.group(2).equals("A") ? Role.EMBEDDING_A : Role.EMBEDDING_B,
                    stripBaseLayer(m.group(1)), m.group(3), 0);
        }
        m = MAGNITUDE_KEY.matcher(k);
        if (m.matches()) {
            // PEFT strips the ".weight" of the DoRA layer; accept it with or without, and with an adapter name.
            String[] rest = m.group(2).isEmpty() ? new String[0] : m.group(2).substring(1).split("\\.");
            if (rest.length > 0 && rest[rest.length - 1].equals("weight")) {
                rest = java.util.Arrays.copyOf(rest, rest.length - 1);
            }
            if (rest.length > 1) {
                return null;
            }
            return new AdapterKey(key, Role.MAGNITUDE, stripBaseLayer(m.group(1)), rest.length == 1 ? rest[0] : null, 0);
        }
        m = TOKENS_KEY.matcher(k);
        if (m.matches()) {
            return new AdapterKey(key, Role.TOKENS, stripBaseLayer(m.group(1)), m.group(2), 0);
        }
        if (LORA_PART.matcher(k).matches()) {
            return null;
        }
        if (WRAPPER_COPY.matcher(k).matches()) {
            String replaced = k.replaceFirst("\\.(?:modules_to_save|original_module)\\.([^.]+)$", ".$1");
            return new AdapterKey(key, Role.WRAPPER_COPY, stripBaseLayer(replaced), null, 0);
        }
        String target = stripBaseLayer(MODULES_TO_SAVE.matcher(k).replaceFirst("."));
        return new AdapterKey(key, Role.FULL, target, null, 0);
    }

    private static int trailingBaseLayers(String module) {
        int n = 0;
        for (String s = module; s.endsWith(".base_layer"); s = s.substring(0, s.length() - ".base_layer".length())) {
            n++;
        }
        return n;
    }

    private static String stripBaseLayer(String s) {
        String out = s;
        while (out.contains(".base_layer.")) {
            out = out.replace(".base_layer.", ".");
        }
        return out.endsWith(".base_layer") ? out.substring(0, out.length() - ".base_layer".length()) : out;
    }
}

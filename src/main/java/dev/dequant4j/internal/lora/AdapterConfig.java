package dev.dequant4j.internal.lora;

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
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * The fields of a PEFT {@code adapter_config.json} that matter for merging (peft {@code tuners/lora/config.py}).
 * {@code peft_type}, {@code r} and {@code lora_alpha} are required: they decide the scaling, and a default would
 * be a guess. Flags added in later PEFT versions ({@code use_rslora}, {@code use_dora}, {@code lora_bias}, ...) default
 * to off when absent, as older PEFT versions wrote no such field. Configs that cannot be merged into the original base
 * weights are refused here, before any tensor is read.
 */
public final class AdapterConfig {
    private final Path file;
    private final int r;
    private final double alpha;
    private final boolean useRslora;
    private final boolean useDora;
    private final boolean fanInFanOut;
    private final boolean ensureWeightTying;
    private final boolean loraBias;
    private final String initLoraWeights;
    private final List<String> targetModules;
    private final String targetModulesRegex;
    private final List<String> modulesToSave;
    private final List<String> targetParameters;
    private final Map<String, List<Long>> trainableTokens;
    private final List<Long> trainableTokensList;
    private final Map<String, Integer> rankPattern;
    private final Map<String, Double> alphaPattern;
    private final List<Pattern> rankPatterns;
    private final List<Pattern> alphaPatterns;
    private final boolean velora;
    private final boolean monteclora;
    private final String baseModel;
    private final String peftVersion;
    private final List<String> warnings = new ArrayList<>();

    private AdapterConfig(Path file, JsonObject o) {
        this.file = file;
        String peftType = o.getString("peft_type");
        if (!peftType.equals("LORA")) {
            throw refuse("peft_type is \"" + peftType + "\"; dequant4j merges LoRA adapters (peft_type \"LORA\") only");
        }
        long rr = o.getLong("r");
        if (rr < 1 || rr > Integer.MAX_VALUE) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, file, "field 'r' must be a positive integer, not " + rr);
        }
        this.r = (int) rr;
        this.alpha = float32Range("lora_alpha", o.getDouble("lora_alpha"), o.get("lora_alpha"));
        this.useRslora = o.getBoolean("use_rslora", false);
        this.useDora = o.getBoolean("use_dora", false);
        this.fanInFanOut = o.getBoolean("fan_in_fan_out", false);
        this.ensureWeightTying = o.getBoolean("ensure_weight_tying", false);
        this.loraBias = o.getBoolean("lora_bias", false);
        this.initLoraWeights = initWeights(o.get("init_lora_weights"));
        this.baseModel = o.optString("base_model_name_or_path").orElse(null);
        this.peftVersion = o.optString("peft_version").orElse(null);

        JsonValue tm = o.get("target_modules");
        if (tm instanceof JsonString s) {
            this.targetModules = List.of();
            this.targetModulesRegex = s.value();
        } else {
            this.targetModules = strings(o, "target_modules");
            this.targetModulesRegex = null;
        }
        this.modulesToSave = strings(o, "modules_to_save");
        this.targetParameters = strings(o, "target_parameters");
        this.rankPattern = Collections.unmodifiableMap(intMap(o, "rank_pattern"));
        this.alphaPattern = Collections.unmodifiableMap(numberMap(o, "alpha_pattern"));
        this.rankPatterns = compileAll("rank_pattern", rankPattern.keySet());
        this.alphaPatterns = compileAll("alpha_pattern", alphaPattern.keySet());

        JsonValue tt = o.get("trainable_token_indices");
        if (tt instanceof JsonObject m) {
            Map<String, List<Long>> map = new LinkedHashMap<>();
            for (String k : m.keys()) {
                map.put(k, longs("trainable_token_indices." + k, m.get(k)));
            }
            this.trainableTokens = Collections.unmodifiableMap(map);
            this.trainableTokensList = null;
        } else if (tt == null || tt == JsonNull.NULL) {
            this.trainableTokens = Map.of();
            this.trainableTokensList = null;
        } else {
            this.trainableTokens = Map.of();
            this.trainableTokensList = longs("trainable_token_indices", tt);
        }

        this.velora = present(o, "velora_config");
        this.monteclora = present(o, "monteclora_config");
        refuseUnmergeable(o);
    }

    /** Parses and checks a config; {@code file} is used in messages. */
    public static AdapterConfig parse(Path file, JsonObject o) {
        try {
            return new AdapterConfig(file, o);
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, file, e.getMessage(), e);
        }
    }

    private void refuseUnmergeable(JsonObject o) {
        String init = initLoraWeights.toLowerCase(Locale.ROOT);
        if (init.startsWith("pissa") || init.equals("olora") || init.startsWith("corda") || init.equals("lora_ga")) {
            throw refuse("init_lora_weights is \"" + initLoraWeights + "\": this initialisation subtracts the initial"
                    + " adapter from the base weights, so the adapter only fits that modified (residual) base, not the"
                    + " original checkpoint; save it with PEFT's save_pretrained(...,"
                    + " path_initial_model_for_weight_conversion=...) to convert it into a plain LoRA adapter");
        }
        if (init.equals("loftq")) {
            warnings.add("init_lora_weights is \"loftq\": LoftQ replaces the base weights at initialisation; merge it"
                    + " into the base it was trained with (the LoftQ-quantized model), not the original weights");
        }
        if (present(o, "alora_invocation_tokens")) {
            throw refuse("alora_invocation_tokens is set: an activated LoRA (aLoRA) applies only after its invocation"
                    + " tokens and cannot be merged into the weights (PEFT refuses too)");
        }
        if (present(o, "arrow_config")) {
            throw refuse("arrow_config is set: an Arrow router chooses adapters per token and cannot be merged"
                    + " (PEFT refuses too)");
        }
        if (present(o, "kasa_config")) {
            throw refuse("kasa_config is set: KaSA truncates the base weights' singular values and adds a diagonal"
                    + " factor; dequant4j does not support it");
        }
        if (present(o, "use_bdlora")) {
            throw refuse("use_bdlora is set: block-diagonal LoRA factors are not supported");
        }
        if (o.getBoolean("use_qalora", false)) {
            throw refuse("use_qalora is true: QA-LoRA works on GPTQ layers and cannot be merged (PEFT refuses too)");
        }
        if (present(o, "layer_replication")) {
            throw refuse("layer_replication is set: the adapter belongs to a model with duplicated layers, whose"
                    + " extra layers do not exist in the base checkpoint");
        }
    }

    private Dequant4jException refuse(String why) {
        return new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "cannot merge this adapter: " + why);
    }

    private static boolean present(JsonObject o, String key) {
        JsonValue v = o.get(key);
        if (v == null || v == JsonNull.NULL || v == JsonBoolean.FALSE) {
            return false;
        }
        return !(v instanceof JsonObject m && m.size() == 0) && !(v instanceof JsonArray a && a.size() == 0);
    }

    private static String initWeights(JsonValue v) {
        return switch (v) {
            case null -> "true";
            case JsonBoolean b -> b == JsonBoolean.TRUE ? "true" : "false";
            case JsonString s -> s.value();
            case JsonNull ignored -> "true";
            default -> throw new JsonException("field 'init_lora_weights' must be a boolean or a string");
        };
    }

    private static List<String> strings(JsonObject o, String key) {
        JsonValue v = o.get(key);
        if (v == null || v == JsonNull.NULL) {
            return List.of();
        }
        if (!(v instanceof JsonArray a)) {
            throw new JsonException("field '" + key + "' must be a list of strings or null");
        }
        List<String> out = new ArrayList<>();
        for (JsonValue e : a.values()) {
            if (!(e instanceof JsonString s)) {
                throw new JsonException("field '" + key + "' must be a list of strings");
            }
            out.add(s.value());
        }
        return List.copyOf(out);
    }

    private static List<Long> longs(String what, JsonValue v) {
        if (!(v instanceof JsonArray a)) {
            throw new JsonException("field '" + what + "' must be a list of integers");
        }
        List<Long> out = new ArrayList<>();
        for (JsonValue e : a.values()) {
            if (!(e instanceof JsonNumber n) || !n.isLong() || n.longValue() < 0) {
                throw new JsonException("field '" + what + "' must be a list of non-negative integers");
            }
            out.add(n.longValue());
        }
        return List.copyOf(out);
    }

    private static Map<String, Integer> intMap(JsonObject o, String key) {
        Map<String, Integer> out = new LinkedHashMap<>();
        if (o.get(key) == null || o.get(key) == JsonNull.NULL) {
            return out;
        }
        JsonObject m = patterns(o, key);
        for (String k : m.keys()) {
            if (!(m.get(k) instanceof JsonNumber n) || !n.isLong() || n.longValue() < 1
                    || n.longValue() > Integer.MAX_VALUE) {
                throw new JsonException("field '" + key + "' must map names to positive integers ('" + k + "' does not)");
            }
            out.put(k, (int) n.longValue());
        }
        return out;
    }

    /** Keys a {@code rank_pattern} or {@code alpha_pattern} may have; a real config has at most a few thousand. */
    static final int MAX_PATTERN_KEYS = 65_536;

    /**
     * The pattern map {@code key}: each key becomes a compiled regular expression matched against every module, so
     * their number is bounded before any is compiled.
     */
    private static JsonObject patterns(JsonObject o, String key) {
        JsonObject m = o.getObject(key);
        if (m.keys().size() > MAX_PATTERN_KEYS) {
            throw new JsonException("field '" + key + "' has " + m.keys().size() + " keys, more than the "
                    + MAX_PATTERN_KEYS + " dequant4j accepts");
        }
        return m;
    }

    private static Map<String, Double> numberMap(JsonObject o, String key) {
        Map<String, Double> out = new LinkedHashMap<>();
        if (o.get(key) == null || o.get(key) == JsonNull.NULL) {
            return out;
        }
        JsonObject m = patterns(o, key);
        for (String k : m.keys()) {
            if (!(m.get(k) instanceof JsonNumber n)) {
                throw new JsonException("field '" + key + "' must map names to numbers ('" + k + "' does not)");
            }
            if (!(Math.abs(n.doubleValue()) <= Float.MAX_VALUE)) {
                throw new JsonException("field '" + key + "' must map names to finite numbers within the float32 range"
                        + " ('" + k + "' does not)");
            }
            out.put(k, n.doubleValue());
        }
        return out;
    }

    /**
     * PEFT multiplies fp32 tensors by {@code alpha / r}: an alpha beyond the float32 range (JSON allows 1e999, which
     * reads as infinity) would make every merged weight infinite.
     */
    private static double float32Range(String key, double value, JsonValue source) {
        if (!(Math.abs(value) <= Float.MAX_VALUE)) {
            throw new JsonException("field '" + key + "' must be a finite number within the float32 range, not "
                    + Json.abbreviate(source.toString(), 40));
        }
        return value;
    }

    private List<Pattern> compileAll(String field, Iterable<String> keys) {
        List<Pattern> out = new ArrayList<>();
        for (String k : keys) {
            try {
                out.add(PythonRegex.suffixPattern(k));
            } catch (PatternSyntaxException e) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, field + " key '" + Json.abbreviate(k, 100) + "' is not a regular"
                        + " expression dequant4j can compile: " + e.getDescription());
            }
        }
        return List.copyOf(out);
    }

    /**
     * PEFT's {@code get_pattern_key}: the first key (in file order) whose pattern matches the module name as
     * {@code re.match(rf"(.*\.)?({key})$", module)}, or null. A hostile pattern can backtrack exponentially (Python
     * would hang too) or, matched against a long name, recurse deeper than the stack: each match gets a budget of
     * steps, and either failure is a refusal naming the key.
     */
    private String patternKey(String field, List<Pattern> patterns, Iterable<String> keys, String module) {
        int i = 0;
        for (String k : keys) {
            try {
                if (PythonRegex.lookingAt(patterns.get(i++), module, MATCH_STEPS)) {
                    return k;
                }
            } catch (PythonRegex.TooManySteps e) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, field + " key '" + Json.abbreviate(k, 100) + "' takes too many"
                        + " steps to match module '" + Json.abbreviate(module, 100) + "' (a pattern that backtracks"
                        + " exponentially?)");
            } catch (StackOverflowError e) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, field + " key '" + Json.abbreviate(k, 100) + "' overflows the"
                        + " regular expression engine's stack on module '" + Json.abbreviate(module, 40) + "'");
            }
        }
        return null;
    }

    /**
     * Characters a metered pattern ({@link PythonRegex#suffixPattern}) may read to match one module name, which
     * bounds its backtracking steps: far more than any sane pattern needs (a few thousand for a 100-character name),
     * and spent in well under a second.
     */
    static final long MATCH_STEPS = 1_000_000;

    /** The r the config gives a module: the first matching {@code rank_pattern} entry, else {@code r}. */
    public int rFor(String module) {
        String k = patternKey("rank_pattern", rankPatterns, rankPattern.keySet(), module);
        return k == null ? r : rankPattern.get(k);
    }

    /** The alpha of a module: the first matching {@code alpha_pattern} entry, else {@code lora_alpha}. */
    public double alphaFor(String module) {
        String k = patternKey("alpha_pattern", alphaPatterns, alphaPattern.keySet(), module);
        return k == null ? alpha : alphaPattern.get(k);
    }

    /**
     * PEFT's scaling as the float32 that multiplies an fp32 tensor: {@code alpha / r}, or {@code alpha / sqrt(r)}
     * with rsLoRA, computed in double as Python does and rounded once to float.
     */
    public float scaling(int r, double alpha) {
        return (float) (useRslora ? alpha / Math.sqrt(r) : alpha / r);
    }

    public int r() {
        return r;
    }

    public double alpha() {
        return alpha;
    }

    public boolean useRslora() {
        return useRslora;
    }

    public boolean useDora() {
        return useDora;
    }

    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    /**
     * PEFT's {@code ensure_weight_tying}: the adapters on a tied embedding and output layer were one set of factors
     * (the output layer's {@code lora_A}/{@code lora_B} are the embedding's {@code lora_embedding_B}/{@code _A},
     * transposed).
     */
    public boolean ensureWeightTying() {
        return ensureWeightTying;
    }

    public boolean loraBias() {
        return loraBias;
    }

    /** {@code target_modules} as a list (empty when it is a regex or absent). */
    public List<String> targetModules() {
        return targetModules;
    }

    /** {@code target_modules} when it is a regex string (full match), else null. */
    public String targetModulesRegex() {
        return targetModulesRegex;
    }

    public List<String> modulesToSave() {
        return modulesToSave;
    }

    /**
     * {@code target_parameters}: the parameters PEFT wrapped directly ({@code ParamWrapper}), as names or name
     * suffixes ({@code gate_up_proj}, {@code mlp.gate.weight}); empty when absent.
     */
    public List<String> targetParameters() {
        return targetParameters;
    }

    /** {@code trainable_token_indices} in its dict form (module name suffix to indices); empty otherwise. */
    public Map<String, List<Long>> trainableTokens() {
        return trainableTokens;
    }

    /** {@code trainable_token_indices} in its list form (for the input embedding), else null. */
    public List<Long> trainableTokensList() {
        return trainableTokensList;
    }

    public Map<String, Integer> rankPattern() {
        return rankPattern;
    }

    public Map<String, Double> alphaPattern() {
        return alphaPattern;
    }

    /** VeLoRA only changes the backward pass; its extra buffers are saved but play no part in the merge. */
    public boolean velora() {
        return velora;
    }

    /** MonteCLoRA's sampler only acts in training; PEFT merges the plain A and B. */
    public boolean monteclora() {
        return monteclora;
    }

    public String baseModel() {
        return baseModel;
    }

    public String peftVersion() {
        return peftVersion;
    }

    public List<String> warnings() {
        return warnings;
    }
}

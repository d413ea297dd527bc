package dev.dequant4j.internal.gguf;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What llama.cpp's {@code convert_hf_to_gguf.py} (upstream 81ff7ab) writes for a Hugging Face model, computed from
 * its config.json and its tensors' names and shapes alone: the architecture, the metadata up to
 * {@code general.quantization_version} (the tokenizer's keys follow), and every tensor's GGUF name, order, shape,
 * type and transformation. Mirrors {@code TextModel.set_gguf_parameters}, {@code ModelBase.prepare_tensors} and the
 * architecture's model class; anything it does not know is refused, never written half-right.
 */
public final class GgufModel {
    /**
     * One tensor of the Hugging Face model (as our safetensors export would write it), numpy-order shape; {@code shard}
     * is the file of that export it would be in (the converter reads the files in order, each sorted by name).
     */
    public record Source(String name, long[] shape, Path file, int shard) {
        public Source {
            shape = shape.clone();
        }
    }

    /**
     * One GGUF tensor, in file order.
     *
     * @param source       index into the sources, the tensor's values
     * @param ne           ggml's dimensions, innermost first (the numpy shape reversed)
     * @param permuteHeads for llama's Q and K: the number of heads whose rows {@code LlamaModel.permute} reorders
     *                     (0: rows as they are)
     * @param add          added to every value (Gemma's norms: the converter stores {@code 1 + weight})
     * @param values       a tensor the converter computes ({@code rope_freqs}; {@code source} is then -1), or null
     */
    public record Tensor(String name, int source, long[] ne, GgmlType type, int permuteHeads, float add,
                         float[] values) {
        public Tensor {
            ne = ne.clone();
        }

        Tensor(String name, int source, long[] ne, GgmlType type, int permuteHeads, float add) {
            this(name, source, ne, type, permuteHeads, add, null);
        }

        public long elements() {
            long n = 1;
            for (long d : ne) {
                n = Math.multiplyExact(n, d);
            }
            return n;
        }

        /** Elements per row: {@code ne[0]}. */
        public long rowLength() {
            return ne.length == 0 ? 1 : ne[0];
        }
    }

    /**
     * How an architecture names and transforms its tensors.
     *
     * @param permuteQk  {@code LlamaModel.permute} of Q and K ({@code undo_permute})
     * @param keys       whose {@code set_gguf_parameters} writes the hyperparameters
     * @param gemma      Gemma's norms (stored + 1) and dropped lm_head
     */
    private record Arch(String name, Map<String, String> global, Map<String, String> block, boolean permuteQk,
                        Keys keys, Map<String, Number> defaults, boolean headDimDefault, boolean gemma) {
        Arch(String name, Map<String, String> global, Map<String, String> block, boolean permuteQk,
             Keys keys, Map<String, Number> defaults, boolean headDimDefault) {
            this(name, global, block, permuteQk, keys, defaults, headDimDefault, false);
        }
    }

    /** The converter classes' {@code set_gguf_parameters}. */
    private enum Keys {
        /** {@code TextModel}'s. */
        TEXT,
        /** {@code TextModel}'s, then {@code LlamaModel}'s vocab_size and rope.dimension_count. */
        LLAMA,
        /** {@code Gemma2Model}'s own. */
        GEMMA2,
        /** {@code Phi3MiniModel}'s own. */
        PHI3,
        /** {@code TextModel}'s, then {@code Gemma3Model}'s over them. */
        GEMMA3
    }


    private static Map<String, String> with(Map<String, String> a, Map<String, String> b) {
        Map<String, String> m = new LinkedHashMap<>(a);
        m.putAll(b);
        return Map.copyOf(m);
    }

    private static final Map<String, String> PHI3_BLOCK = Map.ofEntries(
            Map.entry("input_layernorm", "attn_norm"),
            Map.entry("self_attn.qkv_proj", "attn_qkv"),
            Map.entry("self_attn.o_proj", "attn_output"),
            Map.entry("post_attention_layernorm", "ffn_norm"),
            Map.entry("mlp.gate_up_proj", "ffn_up"),
            Map.entry("mlp.down_proj", "ffn_down"));

    private static final Map<String, String> GEMMA_GLOBAL = Map.of(
            "model.embed_tokens", "token_embd",
            "model.norm", "output_norm");

    private static final Map<String, String> GEMMA_BLOCK = Map.ofEntries(
            Map.entry("input_layernorm", "attn_norm"),
            Map.entry("self_attn.q_proj", "attn_q"),
            Map.entry("self_attn.k_proj", "attn_k"),
            Map.entry("self_attn.v_proj", "attn_v"),
            Map.entry("self_attn.o_proj", "attn_output"),
            Map.entry("post_attention_layernorm", "post_attention_norm"),
            Map.entry("pre_feedforward_layernorm", "ffn_norm"),
            Map.entry("post_feedforward_layernorm", "post_ffw_norm"),
            Map.entry("mlp.gate_proj", "ffn_gate"),
            Map.entry("mlp.up_proj", "ffn_up"),
            Map.entry("mlp.down_proj", "ffn_down"));

    /**
     * What transformers' config class fills in for a key config.json leaves out (the converter reads
     * {@code AutoConfig.from_pretrained(...).to_dict()}, not the file): LlamaConfig and MistralConfig also derive
     * {@code head_dim} from hidden_size / num_attention_heads, Qwen2Config does not.
     */
    private static final Map<String, Number> LLAMA_DEFAULTS = Map.of("max_position_embeddings", 2048,
            "rms_norm_eps", 1e-6);
    private static final Map<String, Number> MISTRAL_DEFAULTS = Map.of("max_position_embeddings", 131072,
            "rms_norm_eps", 1e-6, "num_key_value_heads", 8);
    private static final Map<String, Number> QWEN2_DEFAULTS = Map.of("max_position_embeddings", 32768,
            "rms_norm_eps", 1e-6, "num_key_value_heads", 32);

    private static final Map<String, String> LLAMA_GLOBAL = Map.of(
            "model.embed_tokens", "token_embd",
            "model.norm", "output_norm",
            "lm_head", "output");

    private static final Map<String, String> LLAMA_BLOCK = Map.ofEntries(
            Map.entry("input_layernorm", "attn_norm"),
            Map.entry("self_attn.q_proj", "attn_q"),
            Map.entry("self_attn.k_proj", "attn_k"),
            Map.entry("self_attn.v_proj", "attn_v"),
            Map.entry("self_attn.o_proj", "attn_output"),
            Map.entry("post_attention_layernorm", "ffn_norm"),
            Map.entry("mlp.gate_proj", "ffn_gate"),
            Map.entry("mlp.up_proj", "ffn_up"),
            Map.entry("mlp.down_proj", "ffn_down"));

    private static final Map<String, String> GEMMA3_BLOCK = with(GEMMA_BLOCK, Map.of(
            "self_attn.q_norm", "attn_q_norm",
            "self_attn.k_norm", "attn_k_norm"));

    private static final Map<String, String> QWEN3_BLOCK = with(LLAMA_BLOCK, Map.of(
            "self_attn.q_norm", "attn_q_norm",
            "self_attn.k_norm", "attn_k_norm"));

    /** Qwen3Config's defaults (it derives no head_dim: its default is 128). */
    private static final Map<String, Number> QWEN3_DEFAULTS = Map.of("max_position_embeddings", 32768,
            "rms_norm_eps", 1e-6, "num_key_value_heads", 32, "head_dim", 128);

    /** Phi3Config's defaults (original_max_position_embeddings is read from the rope parameters). */
    private static final Map<String, Number> PHI3_DEFAULTS = Map.of("max_position_embeddings", 4096,
            "original_max_position_embeddings", 4096, "rms_norm_eps", 1e-5);

    /** Hugging Face architectures (config.json's {@code architectures[0]}) and the converter class each maps to. */
    private static final Map<String, Arch> ARCHITECTURES = Map.of(
            "LlamaForCausalLM", new Arch("llama", LLAMA_GLOBAL, LLAMA_BLOCK, true, Keys.LLAMA, LLAMA_DEFAULTS, true),
            "MistralForCausalLM", new Arch("llama", LLAMA_GLOBAL, LLAMA_BLOCK, true, Keys.LLAMA, MISTRAL_DEFAULTS,
                    true),
            "Qwen2ForCausalLM", new Arch("qwen2", LLAMA_GLOBAL, LLAMA_BLOCK, false, Keys.TEXT, QWEN2_DEFAULTS, false),
            "Gemma2ForCausalLM", new Arch("gemma2", GEMMA_GLOBAL, GEMMA_BLOCK, false, Keys.GEMMA2,
                    Map.of("num_key_value_heads", 4), false, true),
            "Phi3ForCausalLM", new Arch("phi3", LLAMA_GLOBAL, PHI3_BLOCK, false, Keys.PHI3, PHI3_DEFAULTS, false),
            "Qwen3ForCausalLM", new Arch("qwen3", LLAMA_GLOBAL, QWEN3_BLOCK, false, Keys.TEXT, QWEN3_DEFAULTS, false),
            "Gemma3ForCausalLM", new Arch("gemma3", LLAMA_GLOBAL, GEMMA3_BLOCK, false, Keys.GEMMA3, Map.of(), false,
                    true),
            "Gemma3ForConditionalGeneration", new Arch("gemma3", LLAMA_GLOBAL, GEMMA3_BLOCK, false, Keys.GEMMA3,
                    Map.of(), false, true));


    private static final Pattern BLOCK = Pattern.compile("model\\.layers\\.(\\d+)\\.(.+)\\.(weight|bias)");

    private final String architecture;
    private final GgufMetadata metadata;
    private final List<Tensor> tensors;

    private final QuantMix.Mix mix;

    private GgufModel(String architecture, GgufMetadata metadata, List<Tensor> tensors, QuantMix.Mix mix) {
        this.architecture = architecture;
        this.metadata = metadata;
        this.tensors = tensors;
        this.mix = mix;
    }

    /** llama-quantize's mix for a K-quant type, else null (the converter writes the type itself). */
    static QuantMix.Mix mix(GgufFileType type) {
        return switch (type) {
            case Q4_K_M -> QuantMix.Mix.Q4_K_M;
            case Q5_K_M -> QuantMix.Mix.Q5_K_M;
            case Q6_K -> QuantMix.Mix.Q6_K;
            default -> null;
        };
    }

    /**
     * {@code llama-quantize F32.gguf OUT TYPE} (no imatrix): the mix's type for each tensor, in llama-quantize's
     * order (layer, then name).
     */
    private static List<Tensor> quantized(QuantMix.Mix mix, String arch, Hparams hp, List<Tensor> tensors) {
        List<QuantMix.TensorInfo> infos = new ArrayList<>();
        Map<String, Tensor> byName = new LinkedHashMap<>();
        for (Tensor t : tensors) {
            infos.add(new QuantMix.TensorInfo(t.name(), t.ne(), t.type()));
            byName.put(t.name(), t);
        }
        Long kv = hp.optInt("num_key_value_heads");
        int heads = (int) hp.requireInt("num_attention_heads");
        QuantMix.ModelFacts facts = new QuantMix.ModelFacts(arch, (int) hp.requireInt("n_layers",
                "num_hidden_layers", "n_layer", "num_layers"), heads, kv == null ? heads : kv.intValue(), 0);
        Map<String, GgmlType> types;
        try {
            types = QuantMix.types(mix, facts, infos);
        } catch (IllegalArgumentException e) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, hp.file, "llama-quantize's " + mix + " cannot"
                    + " quantize this model: " + e.getMessage());
        }
        List<Tensor> out = new ArrayList<>();
        types.forEach((name, type) -> {
            Tensor t = byName.get(name);
            out.add(new Tensor(name, t.source(), t.ne(), type, t.permuteHeads(), t.add(), t.values()));
        });
        return out;
    }

    /**
     * The metadata as written: the converter's; for a K-quant mix, as llama-quantize rewrites it, with
     * {@code general.quantization_version} and {@code general.file_type} removed and set again at the end (ggml's
     * {@code gguf_set_val_u32} appends).
     */
    public GgufMetadata written() {
        if (mix == null) {
            return metadata;
        }
        GgufMetadata md = new GgufMetadata();
        metadata.entries().forEach((k, v) -> {
            if (!k.equals("general.quantization_version") && !k.equals("general.file_type")) {
                md.put(k, v);
            }
        });
        md.putUint32("general.quantization_version", 2);
        md.putUint32("general.file_type", mix.fileType);
        return md;
    }

    /**
     * @param config     config.json as our safetensors export writes it (after {@code ConfigRewriter})
     * @param configFile for messages
     * @param sources    the tensors our safetensors export would write
     * @param modelName  {@code general.name}
     */
    public static GgufModel of(JsonObject config, Path configFile, List<Source> sources, GgufFileType type,
                               String modelName) {
        Hparams hp = new Hparams(flatten(config), configFile);
        String hfArch = hp.architecture();
        Arch arch = ARCHITECTURES.get(hfArch);
        if (arch == null) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, configFile, "architecture " + hfArch
                    + " cannot be exported as GGUF (supported: " + String.join(", ",
                    ARCHITECTURES.keySet().stream().sorted().toList()) + ")");
        }
        hp.fillDefaults(arch);
        hp.refuseUnsupported(arch.name());
        List<Tensor> tensors = tensors(arch, hp, sources, type);
        GgufMetadata md = new GgufMetadata();
        md.putString("general.architecture", arch.name());
        md.putString("general.type", "model");
        md.putString("general.name", modelName);
        long params = 0;
        for (Tensor t : tensors) {
            params += t.elements();
        }
        md.putString("general.size_label", sizeLabel(params));
        switch (arch.keys()) {
            case GEMMA2 -> hp.gemma2Parameters(md, arch.name(), fileTypeId(type));
            case PHI3 -> hp.phi3Parameters(md, arch.name(), fileTypeId(type));
            case GEMMA3 -> {
                hp.textModelParameters(md, arch.name(), fileTypeId(type));
                hp.gemma3Parameters(md, arch.name());
            }
            default -> hp.textModelParameters(md, arch.name(), fileTypeId(type));
        }
        if (arch.keys() == Keys.LLAMA) {
            md.putUint32(arch.name() + ".vocab_size", hp.requireInt("vocab_size"));
            Long ropeDim = hp.optInt("head_dim");
            md.putUint32(arch.name() + ".rope.dimension_count",
                    ropeDim != null ? ropeDim : hp.requireInt("hidden_size") / hp.requireInt("num_attention_heads"));
        }
        md.putUint32("general.quantization_version", 2);
        QuantMix.Mix mix = mix(type);
        if (mix != null) {
            tensors = quantized(mix, arch.name(), hp, tensors);
        }
        return new GgufModel(arch.name(), md, List.copyOf(tensors), mix);
    }

    /**
     * The converter's tensors in its order: our export's files in order, each file's tensors sorted by name (gguf-py's
     * {@code SafetensorsLocal} sorts them), each mapped, permuted and typed.
     */
    private static List<Tensor> tensors(Arch arch, Hparams hp, List<Source> sources, GgufFileType type) {
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < sources.size(); i++) {
            order.add(i);
        }
        order.sort(Comparator.comparingInt((Integer i) -> sources.get(i).shard())
                .thenComparing(i -> sources.get(i).name()));
        int nHead = (int) hp.requireInt("num_attention_heads");
        Long kv = hp.optInt("num_key_value_heads");
        int nKv = kv == null ? nHead : kv.intValue();
        List<Tensor> out = new ArrayList<>();
        float[] ropeFreqs = arch.keys() == Keys.LLAMA ? hp.llama3RopeFactors() : null;
        if (ropeFreqs != null) {
            // generate_extra_tensors comes first in prepare_tensors
            out.add(new Tensor("rope_freqs.weight", -1, new long[] {ropeFreqs.length}, GgmlType.F32, 0, 0f,
                    ropeFreqs));
        }
        for (int i : order) {
            Source s = sources.get(i);
            String hf = textName(s.name());
            if (hf == null || hf.endsWith(".rotary_emb.inv_freq")) {
                continue;
            }
            if (arch.name().equals("gemma2") && hf.equals("lm_head.weight")) {
                // Gemma2Model.filter_tensors drops it: llama.cpp's gemma2 always ties the output to the embedding
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, s.file(), s.name(), "llama.cpp's gemma2 has no"
                        + " output tensor (it uses the embedding), so an lm_head the adapters untied cannot be"
                        + " exported as GGUF");
            }
            String name = mapName(arch, hf, s);
            long[] ne = reversed(s.shape());
            int permute = 0;
            if (arch.permuteQk() && (hf.endsWith("self_attn.q_proj.weight") || hf.endsWith("self_attn.q_proj.bias"))) {
                permute = nHead;
            } else if (arch.permuteQk() && (hf.endsWith("self_attn.k_proj.weight")
                    || hf.endsWith("self_attn.k_proj.bias"))) {
                permute = nKv;
            }
            if (permute > 0) {
                long rows = s.shape()[0];
                if (rows % (2L * permute) != 0) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, s.file(), s.name(), rows
                            + " rows cannot be permuted for " + permute + " rotary heads");
                }
            }
            float add = arch.gemma() && hf.endsWith("norm.weight") ? 1f : 0f;
            out.add(new Tensor(name, i, ne, tensorType(name, ne, type), permute, add));
        }
        return out;
    }

    /**
     * {@code TextModel.filter_tensors} and {@code ModelBase.filter_tensors}: null for a multimodal tower's tensor,
     * else the name with {@code language_model.} taken out.
     */
    static String textName(String name) {
        if (name.startsWith("mlp") || name.startsWith("vit.") || name.startsWith("vpm.") || name.startsWith("siglip2.")
                || name.startsWith("conformer.") || name.startsWith("merger.") || name.startsWith("resampler.")
                || name.startsWith("sound_encoder.") || name.startsWith("sound_projection.")
                || name.startsWith("speech_embeddings.")) {
            return null;
        }
        for (String part : new String[] {"visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.",
                "code2wav.", "projector.", "pre_mm_projector_norm", "image_newline", "view_seperator",
                "patch_embed", "patch_embedding", "patch_merger.", "model.connector."}) {
            if (name.contains(part)) {
                return null;
            }
        }
        if (name.endsWith("e_score_correction_bias")) {
            name = name.replace("e_score_correction_bias", "e_score_correction.bias");
        }
        return name.replace("language_model.", "");
    }

    private static String mapName(Arch arch, String n, Source s) {
        for (String suffix : new String[] {".weight", ".bias"}) {
            if (n.endsWith(suffix) && arch.global().get(n.substring(0, n.length() - suffix.length())) != null) {
                return arch.global().get(n.substring(0, n.length() - suffix.length())) + suffix;
            }
        }
        Matcher m = BLOCK.matcher(n);
        if (m.matches() && arch.block().get(m.group(2)) != null) {
            return "blk." + Integer.parseInt(m.group(1)) + "." + arch.block().get(m.group(2)) + "." + m.group(3);
        }
        throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, s.file(), s.name(), "llama.cpp's " + arch.name()
                + " architecture has no tensor for it; cannot export as GGUF");
    }

    /**
     * {@code prepare_tensors}: one-dimensional tensors, norms and anything not a {@code .weight} stay F32; the
     * others take the file's type, and Q8_0 falls back to F16 where a row is not a whole number of blocks
     * ({@code gguf.quants.quantize} raises {@code QuantError} there).
     */
    static GgmlType tensorType(String name, long[] ne, GgufFileType type) {
        if (ne.length <= 1 || name.endsWith("_norm.weight") || !name.endsWith(".weight")) {
            return GgmlType.F32;
        }
        return switch (type) {
            case F32 -> GgmlType.F32;
            case F16 -> GgmlType.F16;
            case BF16 -> GgmlType.BF16;
            case Q8_0 -> ne[0] % GgmlType.Q8_0.blockSize == 0 ? GgmlType.Q8_0 : GgmlType.F16;
            // llama-quantize's input: the converter's F32 file; its mix decides the types afterwards
            case Q4_K_M, Q5_K_M, Q6_K -> GgmlType.F32;
        };
    }

    /** The Llama 3.1 rope factors for {@code dim / 2} frequencies (see {@code Hparams.llama3RopeFactors}). */
    static float[] llama3RopeFactors(double base, int dim, double factor, double low, double high, double old) {
        float[] out = new float[dim / 2];
        float lowWavelen = (float) (old / low);
        float highWavelen = (float) (old / high);
        for (int k = 0; k < out.length; k++) {
            float freq = 1f / (float) Math.pow((float) base, (float) (2 * k) / (float) dim);
            float wavelen = (1f / freq) * (float) (2 * Math.PI);
            if (wavelen < highWavelen) {
                out[k] = 1f;
            } else if (wavelen > lowWavelen) {
                out[k] = (float) factor;
            } else {
                float smooth = ((1f / wavelen) * (float) old - (float) low) / (float) (high - low);
                out[k] = 1f / ((1f - smooth) / (float) factor + smooth);
            }
        }
        return out;
    }

    /** llama.cpp's {@code llama_ftype}, as the converter writes it in {@code general.file_type}. */
    static int fileTypeId(GgufFileType type) {
        return switch (type) {
            case F32 -> 0;
            case F16 -> 1;
            case Q8_0 -> 7;
            case Q4_K_M -> 15;
            case Q5_K_M -> 17;
            case Q6_K -> 18;
            case BF16 -> 32;
        };
    }

    /** gguf-py's {@code size_label} for a dense model: "119K", "1.2B", "8.0B". */
    static String sizeLabel(long params) {
        double scaled;
        String suffix;
        if (params > 1e12) {
            scaled = params * 1e-12;
            suffix = "T";
        } else if (params > 1e9) {
            scaled = params * 1e-9;
            suffix = "B";
        } else if (params > 1e6) {
            scaled = params * 1e-6;
            suffix = "M";
        } else {
            scaled = params * 1e-3;
            suffix = "K";
        }
        String rounded = Long.toString(Math.round(Math.rint(scaled)));
        int digits = rounded.replaceFirst("^0+", "").length();
        int fix = Math.max(2 - digits, 0);
        return new java.math.BigDecimal(scaled).setScale(fix, java.math.RoundingMode.HALF_EVEN).toPlainString()
                + suffix;
    }

    private static long[] reversed(long[] shape) {
        long[] ne = new long[shape.length];
        for (int i = 0; i < shape.length; i++) {
            ne[i] = shape[shape.length - 1 - i];
        }
        return ne;
    }

    /** {@code TextModel.__init__}: a {@code text_config} is moved to the root. */
    private static Map<String, JsonValue> flatten(JsonObject config) {
        Map<String, JsonValue> m = new LinkedHashMap<>(config.members());
        if (config.get("text_config") instanceof JsonObject text) {
            m.putAll(text.members());
        }
        return m;
    }

    public String architecture() {
        return architecture;
    }

    /** The metadata up to {@code general.quantization_version}; the tokenizer's keys are appended after it. */
    public GgufMetadata metadata() {
        return metadata;
    }

    public List<Tensor> tensors() {
        return tensors;
    }

    /** config.json's values, looked up as the converter's {@code find_hparam} does. */
    private static final class Hparams {
        private final Map<String, JsonValue> m;
        private final Path file;

        Hparams(Map<String, JsonValue> m, Path file) {
            this.m = m;
            this.file = file;
        }

        String architecture() {
            JsonValue text = m.get("text_config");
            if (m.get("architectures") instanceof JsonArray a && !a.values().isEmpty()
                    && a.values().getFirst() instanceof JsonString s) {
                return s.value();
            }
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "config.json names no architecture"
                    + (text == null ? "" : " (nor does its text_config)") + "; cannot export as GGUF");
        }

        /**
         * The config class's defaults for absent (or null) keys: the architecture's, LlamaConfig's num_key_value_heads
         * = num_attention_heads, head_dim = hidden_size / num_attention_heads where the class derives it, and rope
         * parameters {rope_theta 10000, rope_type default} when none are given.
         */
        void fillDefaults(Arch arch) {
            arch.defaults().forEach((k, v) -> {
                if (find(k) == null) {
                    m.put(k, v instanceof Double d ? JsonNumber.of(d) : JsonNumber.of(v.longValue()));
                }
            });
            Long heads = optInt("num_attention_heads");
            if (find("num_key_value_heads") == null && heads != null) {
                m.put("num_key_value_heads", JsonNumber.of(heads));
            }
            Long hidden = optInt("hidden_size");
            if (arch.headDimDefault() && find("head_dim") == null && heads != null && hidden != null && heads > 0) {
                m.put("head_dim", JsonNumber.of(hidden / heads));
            }
            if (find("rope_parameters", "rope_scaling") == null && find("rope_theta") == null) {
                m.put("rope_parameters", new JsonObject(Map.of("rope_theta", JsonNumber.of(10000.0),
                        "rope_type", new JsonString("default"))));
            }
        }

        /** Refuses what this exporter does not mirror yet, rather than writing a file llama.cpp misreads. */
        /**
         * {@code LlamaModel.generate_extra_tensors}: the Llama 3.1 rope factors, or null for another rope type.
         * Computed in float32 in torch's order of operations ({@code scalar / t} is {@code t.reciprocal() * scalar},
         * the Python scalars rounded to float32), which gives torch's bits (checked for Llama 3.1 and 3.2 shapes).
         */
        float[] llama3RopeFactors() {
            JsonObject all = rope();
            JsonObject rope = all.get("full_attention") instanceof JsonObject f ? f : all;
            if (!"llama3".equalsIgnoreCase(rope.optString("rope_type").orElse(""))) {
                return null;
            }
            Long dim = optInt("head_dim");
            long d = dim != null ? dim : requireInt("hidden_size") / requireInt("num_attention_heads");
            return GgufModel.llama3RopeFactors(orDefault(rope, "rope_theta", 10000.0), (int) d, orDefault(rope, "factor", 8.0),
                    orDefault(rope, "low_freq_factor", 1.0), orDefault(rope, "high_freq_factor", 4.0),
                    orDefault(rope, "original_max_position_embeddings", 8192));
        }

        private double orDefault(JsonObject o, String key, double dflt) {
            JsonValue v = o.get(key);
            if (v == null || v instanceof JsonNull) {
                return dflt;
            }
            if (v instanceof JsonNumber n) {
                return n.doubleValue();
            }
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "rope " + key + " is " + v + ", not a number");
        }

        void refuseUnsupported(String arch) {
            for (String k : new String[] {"num_local_experts", "num_experts", "n_routed_experts"}) {
                if (find(k) != null) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "mixture-of-experts models ('" + k
                            + "') cannot be exported as GGUF " + arch + " yet");
                }
            }
            JsonObject rope = rope();
            String type = rope.optString("rope_type").orElse(null);
            if (type != null && !List.of("default", "linear", "yarn", "llama3").contains(type.toLowerCase(Locale.ROOT))) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "rope type '" + type
                        + "' cannot be exported as GGUF " + arch + " yet");
            }
            if (rope.get("long_factor") != null && !(rope.get("long_factor") instanceof JsonNull)) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "LongRoPE scaling (long_factor, the"
                        + " rope_factors tensors) cannot be exported as GGUF " + arch + " yet");
            }
            if (rope.has("mrope_section")) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "multimodal rope (mrope_section) cannot"
                        + " be exported as GGUF yet");
            }
            if ("llama3".equalsIgnoreCase(type) && !arch.equals("llama")) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "Llama 3.1 rope scaling on " + arch
                        + " cannot be exported as GGUF");
            }
        }

        /** The value of the first key present ({@code find_hparam}); a JSON null counts as absent. */
        JsonValue find(String... keys) {
            for (String k : keys) {
                if (m.containsKey(k)) {
                    JsonValue v = m.get(k);
                    return v instanceof JsonNull ? null : v;
                }
            }
            return null;
        }

        Long optInt(String... keys) {
            JsonValue v = find(keys);
            if (v == null) {
                return null;
            }
            if (v instanceof JsonNumber n && n.isLong() && n.longValue() >= 0) {
                return n.longValue();
            }
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, String.join("/", keys) + " is " + v
                    + ", not a non-negative integer");
        }

        long requireInt(String... keys) {
            Long v = optInt(keys);
            if (v == null) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "config.json has no " + String.join(
                        " or ", keys) + "; GGUF needs it");
            }
            return v;
        }

        Float optFloat(JsonObject o, String key) {
            JsonValue v = o.get(key);
            if (v == null || v instanceof JsonNull) {
                return null;
            }
            if (v instanceof JsonNumber n) {
                return (float) n.doubleValue();
            }
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, key + " is " + v + ", not a number");
        }

        Float optFloat(String... keys) {
            JsonValue v = find(keys);
            if (v == null) {
                return null;
            }
            if (v instanceof JsonNumber n) {
                return (float) n.doubleValue();
            }
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, String.join("/", keys) + " is " + v
                    + ", not a number");
        }

        /**
         * {@code TextModel.__init__}'s rope parameters: {@code rope_parameters} (else {@code rope_scaling}), with the
         * root's rope_theta, type and original context mirrored into it.
         */
        JsonObject rope() {
            Map<String, JsonValue> r = new LinkedHashMap<>();
            JsonValue given = m.containsKey("rope_parameters") ? m.get("rope_parameters") : m.get("rope_scaling");
            if (given instanceof JsonObject o) {
                r.putAll(o.members());
            }
            if (!r.containsKey("full_attention") && !r.containsKey("sliding_attention")) {
                JsonValue theta = find("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                        "rotary_emb_base");
                JsonValue local = find("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                        "rope_local_base_freq");
                JsonValue orig = find("original_max_position_embeddings");
                JsonValue pct = find("partial_rotary_factor", "rope_pct", "rope_percent");
                if (!r.containsKey("partial_rotary_factor") && pct != null) {
                    r.put("partial_rotary_factor", pct);
                }
                if (local != null) {
                    r.put("sliding_attention", new JsonObject(Map.of("rope_theta", local)));
                }
                if (!r.containsKey("rope_theta") && theta != null) {
                    r.put("rope_theta", theta);
                }
                if (!r.containsKey("rope_type") && r.get("type") != null && !(r.get("type") instanceof JsonNull)) {
                    r.put("rope_type", r.get("type"));
                }
                if (!r.containsKey("original_max_position_embeddings") && orig != null) {
                    r.put("original_max_position_embeddings", orig);
                }
            }
            return new JsonObject(r);
        }

        /** {@code TextModel.set_gguf_parameters}, key for key in its order (the MoE keys are refused before). */
        void textModelParameters(GgufMetadata md, String arch, int fileType) {
            md.putUint32(arch + ".block_count", requireInt("n_layers", "num_hidden_layers", "n_layer", "num_layers"));
            put(md, arch + ".context_length", optInt("max_position_embeddings", "n_ctx", "n_positions",
                    "max_length", "max_sequence_length", "model_max_length"));
            put(md, arch + ".embedding_length", optInt("hidden_size", "n_embd", "dim"));
            put(md, arch + ".feed_forward_length", optInt("prefix_dense_intermediate_size", "intermediate_size",
                    "n_inner", "hidden_dim"));
            put(md, arch + ".attention.head_count", optInt("num_attention_heads", "n_head", "n_heads"));
            put(md, arch + ".attention.head_count_kv", optInt("num_key_value_heads", "n_kv_heads"));
            if (m.get("is_causal") == JsonBoolean.FALSE) {
                md.putBool(arch + ".attention.causal", false);
            }
            JsonObject all = rope();
            JsonObject rope = all.get("full_attention") instanceof JsonObject f ? f : all;
            String type = rope.optString("rope_type").orElse(null);
            Float factor = optFloat(rope, "factor");
            if ("linear".equals(type) && factor != null) {
                md.putString(arch + ".rope.scaling.type", "linear");
                md.putFloat32(arch + ".rope.scaling.factor", factor);
            } else if ("yarn".equals(type) && factor != null) {
                md.putString(arch + ".rope.scaling.type", "yarn");
                md.putFloat32(arch + ".rope.scaling.factor", factor);
                JsonValue orig = rope.get("original_max_position_embeddings");
                if (!(orig instanceof JsonNumber n) || !n.isLong()) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "yarn rope scaling needs an integer"
                            + " original_max_position_embeddings");
                }
                md.putUint32(arch + ".rope.scaling.original_context_length", n.longValue());
                putFloat(md, arch + ".rope.scaling.yarn_ext_factor", optFloat(rope, "extrapolation_factor"));
                Float attn = optFloat(rope, "attention_factor");
                putFloat(md, arch + ".rope.scaling.yarn_attn_factor", attn != null ? attn
                        : optFloat(rope, "attn_factor"));
                putFloat(md, arch + ".rope.scaling.yarn_beta_fast", optFloat(rope, "beta_fast"));
                putFloat(md, arch + ".rope.scaling.yarn_beta_slow", optFloat(rope, "beta_slow"));
            }
            putFloat(md, arch + ".rope.freq_base", optFloat(rope, "rope_theta"));
            if (all.get("sliding_attention") instanceof JsonObject swa) {
                putFloat(md, arch + ".rope.freq_base_swa", optFloat(swa, "rope_theta"));
            }
            putFloat(md, arch + ".attention.layer_norm_rms_epsilon", optFloat("rms_norm_eps", "norm_eps"));
            putFloat(md, arch + ".attention.layer_norm_epsilon", optFloat("layer_norm_eps", "layer_norm_epsilon",
                    "norm_epsilon"));
            Long headDim = optInt("head_dim");
            if (headDim != null) {
                md.putUint32(arch + ".attention.key_length", headDim);
                md.putUint32(arch + ".attention.value_length", headDim);
            }
            md.putUint32("general.file_type", fileType);
        }

        /** {@code Gemma2Model.set_gguf_parameters}, which reads these keys directly (a missing one fails there). */
        void gemma2Parameters(GgufMetadata md, String arch, int fileType) {
            md.putUint32(arch + ".context_length", requireInt("max_position_embeddings"));
            md.putUint32(arch + ".embedding_length", requireInt("hidden_size"));
            md.putUint32(arch + ".block_count", requireInt("n_layers", "num_hidden_layers", "n_layer", "num_layers"));
            md.putUint32(arch + ".feed_forward_length", requireInt("intermediate_size"));
            md.putUint32(arch + ".attention.head_count", requireInt("num_attention_heads"));
            Long kv = m.containsKey("num_key_value_heads") ? optInt("num_key_value_heads") : null;
            md.putUint32(arch + ".attention.head_count_kv", kv != null ? kv : requireInt("num_attention_heads"));
            md.putFloat32(arch + ".attention.layer_norm_rms_epsilon", requireFloat("rms_norm_eps"));
            md.putUint32(arch + ".attention.key_length", requireInt("head_dim"));
            md.putUint32(arch + ".attention.value_length", requireInt("head_dim"));
            md.putUint32("general.file_type", fileType);
            md.putFloat32(arch + ".attn_logit_softcapping", requireFloat("attn_logit_softcapping"));
            md.putFloat32(arch + ".final_logit_softcapping", requireFloat("final_logit_softcapping"));
            md.putUint32(arch + ".attention.sliding_window", requireInt("sliding_window"));
        }

        /**
         * {@code Gemma3Model.set_gguf_parameters} after {@code TextModel}'s: its values (and defaults) replace keys
         * already written, in place, and sliding_window is added unless {@code sliding_window_pattern} is 1.
         */
        void gemma3Parameters(GgufMetadata md, String arch) {
            Long ctx = optInt("max_position_embeddings");
            md.putUint32(arch + ".context_length", ctx != null ? ctx : 131072);
            Long heads = optInt("num_attention_heads");
            md.putUint32(arch + ".attention.head_count", heads != null ? heads : 8);
            Float eps = optFloat("rms_norm_eps");
            md.putFloat32(arch + ".attention.layer_norm_rms_epsilon", eps != null ? eps : 1e-6f);
            Long headDim = optInt("head_dim");
            md.putUint32(arch + ".attention.key_length", headDim != null ? headDim : 256);
            md.putUint32(arch + ".attention.value_length", headDim != null ? headDim : 256);
            JsonObject all = rope();
            JsonObject full = all.get("full_attention") instanceof JsonObject f ? f : all;
            Float theta = optFloat(full, "rope_theta");
            md.putFloat32(arch + ".rope.freq_base", theta != null ? theta : 1_000_000f);
            if (find("attn_logit_softcapping") != null) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "gemma3 with attn_logit_softcapping is"
                        + " not what llama.cpp's converter expects (it asserts there is none)");
            }
            Float soft = optFloat("final_logit_softcapping");
            if (soft != null && soft != 0f) {
                md.putFloat32(arch + ".final_logit_softcapping", soft);
            }
            JsonValue pattern = find("sliding_window_pattern");
            if (!(pattern instanceof JsonNumber p && p.isLong() && p.longValue() == 1)) {
                md.putUint32(arch + ".attention.sliding_window", requireInt("sliding_window"));
            }
            Long kv = optInt("num_key_value_heads");
            md.putUint32(arch + ".attention.head_count_kv", kv != null ? kv : 4);
        }

        /** {@code Phi3MiniModel.set_gguf_parameters}; LongRoPE's factor tensors are refused before. */
        void phi3Parameters(GgufMetadata md, String arch, int fileType) {
            long embd = requireInt("hidden_size", "n_embd");
            long heads = requireInt("num_attention_heads", "n_head");
            JsonObject rope = rope();
            JsonValue orig = rope.get("original_max_position_embeddings");
            if (!(orig instanceof JsonNumber o) || !o.isLong()) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "phi3 needs an integer"
                        + " original_max_position_embeddings");
            }
            Float pct = optFloat(rope, "partial_rotary_factor");
            // int(rot_pct * n_embd) // n_head, in Python's double arithmetic
            long ropeDims = (long) ((pct == null ? 1.0 : ((JsonNumber) rope.get("partial_rotary_factor"))
                    .doubleValue()) * embd) / heads;
            md.putUint32(arch + ".context_length", requireInt("n_positions", "max_position_embeddings"));
            md.putUint32(arch + ".rope.scaling.original_context_length", o.longValue());
            md.putUint32(arch + ".embedding_length", embd);
            md.putUint32(arch + ".feed_forward_length", requireInt("intermediate_size"));
            md.putUint32(arch + ".block_count", requireInt("n_layers", "num_hidden_layers", "n_layer", "num_layers"));
            md.putUint32(arch + ".attention.head_count", heads);
            md.putUint32(arch + ".attention.head_count_kv", requireInt("num_key_value_heads", "n_head_kv"));
            md.putFloat32(arch + ".attention.layer_norm_rms_epsilon", requireFloat("rms_norm_eps"));
            md.putUint32(arch + ".rope.dimension_count", ropeDims);
            JsonObject full = rope.get("full_attention") instanceof JsonObject f ? f : rope;
            Float theta = optFloat(full, "rope_theta");
            if (theta == null) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "config.json has no rope_theta; GGUF"
                        + " needs it");
            }
            md.putFloat32(arch + ".rope.freq_base", theta);
            md.putUint32("general.file_type", fileType);
            Long window = optInt("sliding_window");
            md.putUint32(arch + ".attention.sliding_window", window == null ? 0 : window);
        }

        float requireFloat(String key) {
            Float v = optFloat(key);
            if (v == null) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, file, "config.json has no " + key
                        + "; GGUF needs it");
            }
            return v;
        }

        private static void put(GgufMetadata md, String key, Long v) {
            if (v != null) {
                md.putUint32(key, v);
            }
        }

        private static void putFloat(GgufMetadata md, String key, Float v) {
            if (v != null) {
                md.putFloat32(key, v);
            }
        }
    }
}

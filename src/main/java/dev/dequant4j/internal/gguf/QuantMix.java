package dev.dequant4j.internal.gguf;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Which tensor gets which type in {@code llama-quantize}'s mixes, ported from llama.cpp 81ff7ab's
 * src/llama-quant.cpp ({@code tensor_allows_quantization}, {@code llama_tensor_get_type_impl},
 * {@code tensor_type_fallback}) for the mixes dequant4j writes, without an importance matrix, overrides or
 * {@code --pure}.
 *
 * <p>Some rules count tensors (the {@code attn_v} and {@code ffn_down} "use more bits" layers), so the types depend
 * on the order llama-quantize visits tensors: its loader's map, by layer number (-1 for tensors outside {@code blk.N.})
 * and then by name. That is also the order of the tensors in the file it writes ({@link #LLAMA_ORDER}).
 *
 * <p>The rest of llama-quantize's file (seen in fixtures/gguf/llama256): the input's metadata keys in their order,
 * except {@code general.quantization_version} (2) and {@code general.file_type} ({@link Mix#fileType}), which it
 * removes and appends last, in that order; the input's alignment; each tensor's data in the type chosen here.
 */
public final class QuantMix {
    private QuantMix() {}

    /** A {@code llama-quantize} mix: its default type and its {@code llama_ftype} number (general.file_type). */
    public enum Mix {
        Q4_K_M(GgmlType.Q4_K, 15), Q5_K_M(GgmlType.Q5_K, 17), Q6_K(GgmlType.Q6_K, 18);

        /** The type of every quantized tensor that no rule changes. */
        public final GgmlType defaultType;
        /** llama.cpp's {@code LLAMA_FTYPE_MOSTLY_*}, which llama-quantize writes as {@code general.file_type}. */
        public final int fileType;

        Mix(GgmlType defaultType, int fileType) {
            this.defaultType = defaultType;
            this.fileType = fileType;
        }
    }

    /**
     * What the rules read from the model's metadata: {@code general.architecture}, {@code ARCH.block_count},
     * {@code ARCH.attention.head_count}, {@code ARCH.attention.head_count_kv} and {@code ARCH.expert_count} (0 when
     * absent).
     */
    public record ModelFacts(String arch, int nLayer, int nHead, int nHeadKv, int nExpert) {
        /**
         * The facts from a GGUF header's keys, as llama.cpp's loader reads them: absent counts are 0, a per-layer
         * head count array gives its first layer's ({@code hparams.n_head()}).
         */
        public static ModelFacts of(GgufMetadata m) {
            String arch = (String) m.get("general.architecture").value();
            return new ModelFacts(arch, count(m, arch + ".block_count"), count(m, arch + ".attention.head_count"),
                    count(m, arch + ".attention.head_count_kv"), count(m, arch + ".expert_count"));
        }

        private static int count(GgufMetadata m, String key) {
            GgufMetadata.Value v = m.get(key);
            return switch (v == null ? null : v.value()) {
                case null -> 0;
                case Number n -> n.intValue();
                case int[] a when a.length > 0 -> a[0];
                case long[] a when a.length > 0 -> (int) a[0];
                default -> throw new IllegalArgumentException(key + " is not a count: " + v.type());
            };
        }

        /** llama.cpp's {@code LLM_TYPE_70B}, the only model size the rules look at (models/*.cpp). */
        boolean is70B() {
            return switch (arch) {
                case "llama" -> experts() != 8 && nLayer == 80 && nHead != nHeadKv;
                case "qwen2", "deci", "olmo" -> nLayer == 80;
                case "jais2" -> nLayer == 68;
                default -> false;
            };
        }

        /** {@code hparams.n_expert}: the loader treats one expert as none. */
        int experts() {
            return nExpert <= 1 ? 0 : nExpert;
        }
    }

    /** One tensor as it would be written unquantized: GGUF name, ggml shape (row length first), type. */
    public record TensorInfo(String name, long[] ne, GgmlType type) {}

    /** llama-quantize's tensor order: layer number ({@code blk.N.}, -1 for others), then name (bytewise). */
    public static final Comparator<String> LLAMA_ORDER =
            Comparator.comparingInt(QuantMix::layerOf).thenComparing(QuantMix::compareBytes);

    /**
     * The type of each tensor in {@code mix}, keyed by name in llama-quantize's order ({@link #LLAMA_ORDER}).
     *
     * @throws IllegalArgumentException where llama-quantize fails too: an MoE tensor's name has no layer number in
     *     range, or an output tensor's rows are not a whole number of 32-element blocks
     */
    public static Map<String, GgmlType> types(Mix mix, ModelFacts facts, List<TensorInfo> tensors) {
        List<TensorInfo> sorted = new ArrayList<>(tensors);
        sorted.sort(Comparator.comparing(TensorInfo::name, LLAMA_ORDER));
        State st = new State(mix, facts);
        for (TensorInfo t : sorted) {
            Category c = Category.of(t.name());
            if (c.attnV()) {
                st.nAttentionWv++;
            }
            if (c == Category.OUTPUT) {
                st.hasTiedEmbeddings = false;
            }
        }
        Map<String, GgmlType> types = new LinkedHashMap<>();
        for (TensorInfo t : sorted) {
            types.put(t.name(), allowsQuantization(t) ? st.typeFor(t, Category.of(t.name())) : t.type());
        }
        return types;
    }

    /** {@code tensor_allows_quantization}: 2-D/3-D weights, not norms, gates of experts or the small special ones. */
    static boolean allowsQuantization(TensorInfo t) {
        if (nDims(t.ne()) < 2) {
            return false;
        }
        String name = t.name();
        if (!name.endsWith("weight")) {
            return false;
        }
        for (String s : NOT_QUANTIZED_PARTS) {
            if (name.contains(s)) {
                return false;
            }
        }
        return !name.equals("position_embd.weight") && !name.equals("token_types.weight");
    }

    private static final List<String> NOT_QUANTIZED_PARTS = List.of("_norm.weight", "ffn_gate_inp.weight", "altup",
            "laurel", "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "time_mix_first.weight",
            "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight",
            "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
            "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
            "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
            "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger");

    /** {@code ggml_n_dims}: dimensions up to the last one that is not 1. */
    static int nDims(long[] ne) {
        for (int i = ne.length - 1; i >= 1; i--) {
            if (ne[i] > 1) {
                return i + 1;
            }
        }
        return 1;
    }

    /** {@code tensor_get_category}. */
    enum Category {
        OUTPUT, TOKEN_EMBD, ATTENTION_QKV, ATTENTION_KV_B, ATTENTION_V, ATTENTION_K, ATTENTION_Q, ATTENTION_OUTPUT,
        FFN_UP, FFN_GATE, FFN_DOWN, OTHER;

        static Category of(String n) {
            if (n.equals("output.weight")) {
                return OUTPUT;
            }
            if (n.equals("token_embd.weight") || n.equals("per_layer_token_embd.weight")) {
                return TOKEN_EMBD;
            }
            if (n.contains("attn_qkv.weight")) {
                return ATTENTION_QKV;
            }
            if (n.contains("attn_kv_b.weight")) {
                return ATTENTION_KV_B;
            }
            if (n.contains("attn_v.weight")) {
                return ATTENTION_V;
            }
            if (n.contains("attn_k.weight")) {
                return ATTENTION_K;
            }
            if (n.contains("attn_q.weight")) {
                return ATTENTION_Q;
            }
            if (n.contains("attn_output.weight")) {
                return ATTENTION_OUTPUT;
            }
            if (n.contains("ffn_up")) {
                return FFN_UP;
            }
            if (n.contains("ffn_gate")) {
                return FFN_GATE;
            }
            if (n.contains("ffn_down")) {
                return FFN_DOWN;
            }
            return OTHER;
        }

        /** {@code category_is_attn_v}: the tensors most sensitive to quantization. */
        boolean attnV() {
            return this == ATTENTION_V || this == ATTENTION_QKV || this == ATTENTION_KV_B;
        }
    }

    /** {@code quantize_state_impl}'s counters, advanced as tensors are visited in llama order. */
    private static final class State {
        final Mix mix;
        final ModelFacts facts;
        int nAttentionWv;
        int iAttentionWv;
        int iFfnDown;
        boolean hasTiedEmbeddings = true;

        State(Mix mix, ModelFacts facts) {
            this.mix = mix;
            this.facts = facts;
        }

        /** {@code llama_tensor_get_type}: the mix's rules, then the fallback for rows of partial blocks. */
        GgmlType typeFor(TensorInfo t, Category c) {
            return fallback(t, rules(t, c));
        }

        private GgmlType rules(TensorInfo t, Category c) {
            GgmlType type = mix.defaultType;
            boolean falcon = facts.arch().equals("falcon");
            int nExpert = facts.experts();
            if (c == Category.OUTPUT || (hasTiedEmbeddings && c == Category.TOKEN_EMBD)) {
                if (falcon || t.ne()[0] % type.blockSize != 0) {
                    return GgmlType.Q8_0;
                }
                return GgmlType.Q6_K;
            }
            if (c.attnV()) {
                if ((mix == Mix.Q4_K_M || mix == Mix.Q5_K_M) && useMoreBits(iAttentionWv, nAttentionWv)) {
                    type = GgmlType.Q6_K;
                }
                if (facts.is70B() && type == GgmlType.Q4_K) {
                    type = GgmlType.Q5_K;
                }
                if (nExpert == 8) {
                    type = GgmlType.Q8_0;
                }
                iAttentionWv++;
            } else if (c == Category.ATTENTION_K) {
                if (nExpert == 8) {
                    type = GgmlType.Q8_0;
                }
            } else if (c == Category.FFN_DOWN) {
                int nLayer = facts.nLayer();
                int iLayer = nExpert > 1 ? layerOfExpertTensor(t.name(), nLayer) : iFfnDown;
                if (mix == Mix.Q4_K_M) {
                    if (falcon) {
                        type = iLayer < nLayer / 16 ? GgmlType.Q6_K
                                : useMoreBits(iLayer, nLayer) ? GgmlType.Q5_K : GgmlType.Q4_K;
                    } else if (useMoreBits(iLayer, nLayer)) {
                        type = GgmlType.Q6_K;
                    }
                } else if (mix == Mix.Q5_K_M && useMoreBits(iLayer, nLayer)) {
                    type = GgmlType.Q6_K;
                }
                iFfnDown++;
            } else if (c == Category.ATTENTION_OUTPUT) {
                if (!falcon && nExpert == 8 && mix == Mix.Q4_K_M) {
                    type = GgmlType.Q5_K;
                }
            }
            return type;
        }

        private static boolean useMoreBits(int iLayer, int nLayers) {
            return iLayer < nLayers / 8 || iLayer >= 7 * nLayers / 8 || (iLayer - nLayers / 8) % 3 == 2;
        }

        /** {@code tensor_type_fallback}: a 32-element type when the row is not a whole number of 256-blocks. */
        private static GgmlType fallback(TensorInfo t, GgmlType type) {
            long ncols = t.ne()[0];
            if (ncols % type.blockSize == 0) {
                return type;
            }
            GgmlType fb = switch (type) {
                case Q4_K -> GgmlType.Q5_0;
                case Q5_K -> GgmlType.Q5_1;
                case Q6_K -> GgmlType.Q8_0;
                default -> throw new IllegalArgumentException(
                        t.name() + ": rows of " + ncols + " fit no " + type + " blocks and " + type + " has no fallback");
            };
            return ncols % fb.blockSize == 0 ? fb : GgmlType.F16;
        }

        private static int layerOfExpertTensor(String name, int nLayer) {
            int layer = layerOf(name);
            if (layer < 0 || layer >= nLayer) {
                throw new IllegalArgumentException(
                        "Bad layer " + layer + " for tensor " + name + ". Must be in [0, " + nLayer + ")");
            }
            return layer;
        }
    }

    /** {@code sscanf(name, "blk.%d.", ...)}: the layer number, -1 when the name does not start so. */
    static int layerOf(String name) {
        if (!name.startsWith("blk.")) {
            return -1;
        }
        int i = 4;
        int start = i;
        if (i < name.length() && (name.charAt(i) == '-' || name.charAt(i) == '+')) {
            i++;
        }
        while (i < name.length() && name.charAt(i) >= '0' && name.charAt(i) <= '9') {
            i++;
        }
        if (i == start || !Character.isDigit(name.charAt(i - 1))) {
            return -1;
        }
        try {
            return Integer.parseInt(name, start, i, 10);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    private static int compareBytes(String a, String b) {
        return Arrays.compareUnsigned(a.getBytes(java.nio.charset.StandardCharsets.UTF_8),
                b.getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }
}

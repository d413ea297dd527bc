package dev.dequant4j;

import dev.dequant4j.internal.lora.Adapter;
import dev.dequant4j.internal.lora.AdapterAccess;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A PEFT LoRA adapter directory ({@code adapter_config.json} + {@code adapter_model.safetensors}, tensors in F32, F16
 * or BF16), as written by PEFT's {@code save_pretrained} or Unsloth's {@code save_pretrained(..., "lora")}.
 *
 * <p>Opening reads the config, maps the tensor file, validates its header and checks that the adapter is complete and
 * consistent on its own (A and B of every module agree on the rank, DoRA magnitudes are there when the config says
 * DoRA, trainable-token rows match their indices); it refuses adapters that cannot be merged into the original base
 * weights (PiSSA/OLoRA/CorDA/LoRA-GA initialisations that were not converted, adapter types other than LoRA). Whether the adapter fits a given base checkpoint is checked when a merge is planned. No tensor
 * data is read until then. Closing releases the mapping; it is idempotent.
 */
public final class LoraAdapter implements AutoCloseable {
    static {
        AdapterAccess.set(a -> a.impl);
    }

    /** What a module of the adapter does to its base tensor when merged. */
    public enum Kind {
        /** A full replacement of a weight: a {@code modules_to_save} copy, or an embedding saved with the adapter. */
        MODULES_TO_SAVE,
        /** A replacement bias ({@code bias = "all"} or {@code "lora_only"}). */
        BIAS,
        /** LoRA on a linear weight: {@code W + s * B @ A} (transposed with {@code fan_in_fan_out}); DoRA if dora. */
        LINEAR,
        /** LoRA on an embedding: {@code W + s * (B @ A)^T}; DoRA (over the vocabulary axis) if dora. */
        EMBEDDING,
        /**
         * LoRA on a fused 3-D expert parameter ({@code target_parameters}, PEFT's {@code ParamWrapper}), e.g.
         * {@code mlp.experts.gate_up_proj}: {@code lora_A} is {@code [r * experts, in]}, {@code lora_B}
         * {@code [out, r * experts]}, and each expert's weight gets its own {@code s * B_e @ A_e}; {@code r} is the
         * rank per expert.
         */
        EXPERTS,
        /** {@code lora_bias}: {@code bias + s * lora_B.bias}. */
        LORA_BIAS,
        /** Trainable tokens: rows of an embedding replaced by the saved rows. */
        TRAINABLE_TOKENS
    }

    /**
     * One module of the adapter and the base tensor it changes.
     *
     * @param module the module path, e.g. {@code model.layers.0.self_attn.q_proj}
     * @param tensor the base tensor it changes, as the adapter names it, e.g.
     *               {@code model.layers.0.self_attn.q_proj.weight} (the merge plan may resolve it to another name, e.g.
     *               a tied {@code lm_head} to the input embedding)
     * @param kind what the merge does
     * @param r the rank, from the tensor shapes (0 for kinds without one)
     * @param alpha {@code lora_alpha} for this module, after {@code alpha_pattern} (0 for kinds without one)
     * @param scaling the float32 scaling factor used in the merge (0 for kinds without one)
     * @param dora whether the DoRA merge applies
     * @param dtype the dtype of the adapter tensors
     * @param keys the adapter tensor keys that make up this module
     */
    public record Module(String module, String tensor, Kind kind, int r, double alpha, float scaling, boolean dora,
                         DType dtype, List<String> keys) {
        /** Copies {@code keys}, so that the record stays immutable. */
        public Module {
            keys = List.copyOf(keys);
        }
    }

    private final Adapter impl;

    private LoraAdapter(Adapter impl) {
        this.impl = impl;
    }

    /**
     * Opens an adapter directory.
     *
     * @param dir a PEFT adapter directory ({@code adapter_config.json} and {@code adapter_model.safetensors})
     * @return the open adapter; close it to release the mapped file
     * @throws Dequant4jException naming the file (and tensor) for anything missing, malformed, inconsistent or
     *                            not mergeable
     */
    public static LoraAdapter open(Path dir) {
        return new LoraAdapter(Adapter.open(dir));
    }

    /** {@return the adapter directory} */
    public Path directory() {
        return impl.directory();
    }

    /** {@return the directory's name, used to label the adapter in messages and manifests} */
    public String name() {
        return impl.name();
    }

    /** {@return the config's default rank {@code r} (a module's actual rank comes from its tensors)} */
    public int r() {
        return impl.config().r();
    }

    /** {@return the config's default {@code lora_alpha}} */
    public double alpha() {
        return impl.config().alpha();
    }

    /** {@return the scaling of a module with the default r and alpha: {@code alpha / r}, or {@code alpha / sqrt(r)}} */
    public float scaling() {
        return impl.config().scaling(r(), alpha());
    }

    /** {@return the config's {@code use_rslora}: scaling {@code alpha / sqrt(r)} instead of {@code alpha / r}} */
    public boolean useRslora() {
        return impl.config().useRslora();
    }

    /** {@return the config's {@code use_dora}: weight-decomposed LoRA, with magnitude vectors} */
    public boolean useDora() {
        return impl.config().useDora();
    }

    /** {@return the config's {@code fan_in_fan_out}: the base layers store their weights as {@code [in, out]}} */
    public boolean fanInFanOut() {
        return impl.config().fanInFanOut();
    }

    /** {@return {@code rank_pattern} in file order (the first matching key wins)} */
    public Map<String, Integer> rankPattern() {
        return impl.config().rankPattern();
    }

    /** {@return {@code alpha_pattern} in file order (the first matching key wins)} */
    public Map<String, Double> alphaPattern() {
        return impl.config().alphaPattern();
    }

    /** {@return {@code target_modules} when it is a list (empty when it is a regex or absent)} */
    public List<String> targetModules() {
        return impl.config().targetModules();
    }

    /** {@return {@code target_modules} when it is a regular expression (Unsloth writes these)} */
    public Optional<String> targetModulesRegex() {
        return Optional.ofNullable(impl.config().targetModulesRegex());
    }

    /** {@return {@code base_model_name_or_path}, if the config has one} */
    public Optional<String> baseModel() {
        return Optional.ofNullable(impl.config().baseModel());
    }

    /** {@return {@code peft_version}, if the config has one} */
    public Optional<String> peftVersion() {
        return Optional.ofNullable(impl.config().peftVersion());
    }

    /** {@return the modules, ordered by base tensor name, then replacements before deltas before token rows} */
    public List<Module> modules() {
        return impl.modules();
    }

    /** {@return things worth telling the user that do not stop a merge (e.g. a config r that disagrees with the tensors)} */
    public List<String> warnings() {
        return impl.warnings();
    }

    @Override
    public void close() {
        impl.close();
    }

    @Override
    public String toString() {
        return "LoraAdapter[" + impl.directory() + ", " + impl.modules().size() + " modules]";
    }
}

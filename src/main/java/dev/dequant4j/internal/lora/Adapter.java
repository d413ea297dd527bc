package dev.dequant4j.internal.lora;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.LoraAdapter.Kind;
import dev.dequant4j.LoraAdapter.Module;
import dev.dequant4j.internal.NaturalOrder;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.lora.AdapterKey.Role;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * A parsed adapter: its config, its mapped tensor file and its modules, checked for consistency on their own
 * (independently of any base checkpoint). The public face is {@link dev.dequant4j.LoraAdapter}.
 */
public final class Adapter implements AutoCloseable {
    public static final String CONFIG = "adapter_config.json";
    public static final String WEIGHTS = "adapter_model.safetensors";
    static final long MAX_CONFIG_BYTES = 16L << 20;

    /**
     * A module with the stored tensors it needs. {@code a}/{@code b} are lora_A/lora_B (or the embedding pair),
     * {@code magnitude} the DoRA vector; {@code values} the replacement, the lora_B bias or the token rows, with
     * {@code tokenIndices} for trainable tokens.
     */
    public record Entry(Module module, TensorStore.Ref a, TensorStore.Ref b, TensorStore.Ref magnitude,
                        TensorStore.Ref values, long[] tokenIndices) {
        public long[] tokenIndices() {
            return tokenIndices == null ? null : tokenIndices.clone();
        }
    }

    private final Path dir;
    private final AdapterConfig config;
    private final TensorStore store;
    private final List<Entry> entries;
    private final List<Module> modules;
    private final List<String> warnings;
    private volatile boolean closed;

    private Adapter(Path dir, AdapterConfig config, TensorStore store, List<Entry> entries, List<String> warnings) {
        this.dir = dir;
        this.config = config;
        this.store = store;
        this.entries = List.copyOf(entries);
        this.modules = entries.stream().map(Entry::module).toList();
        this.warnings = List.copyOf(warnings);
    }

    public static Adapter open(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, dir, Files.exists(dir) ? "an adapter is a directory with " + CONFIG + " and "
                    + WEIGHTS + ", not a file" : "no such directory");
        }
        Path cfgFile = dir.resolve(CONFIG);
        if (!InputFiles.present(cfgFile)) {
            throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, dir, "no " + CONFIG
                    + " (not a PEFT adapter directory?)");
        }
        InputFiles.check(dir, cfgFile);
        Path weights = dir.resolve(WEIGHTS);
        if (InputFiles.present(weights)) {
            InputFiles.check(dir, weights);
        } else {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, dir,
                    Files.exists(dir.resolve("adapter_model.bin"))
                    ? "has only adapter_model.bin (PyTorch pickle); dequant4j reads " + WEIGHTS
                    + " (re-save the adapter with safe_serialization=True)"
                    : "no " + WEIGHTS);
        }
        JsonObject json;
        try {
            json = Json.readObject(cfgFile, MAX_CONFIG_BYTES);
        } catch (IOException e) {
            throw new Dequant4jException(Dequant4jException.Kind.IO, cfgFile, "cannot read: " + e.getMessage(), e);
        } catch (JsonException e) {
            throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, cfgFile, "invalid JSON: " + e.getMessage(), e);
        }
        AdapterConfig config = AdapterConfig.parse(cfgFile, json);
        TensorStore store = TensorStore.openFile(weights);
        try {
            List<String> warnings = new ArrayList<>(config.warnings());
            List<Entry> entries = new Builder(weights, config, store, warnings).build();
            return new Adapter(dir, config, store, entries, warnings);
        } catch (RuntimeException e) {
            store.close();
            throw e;
        }
    }

    public Path directory() {
        return dir;
    }

    public String name() {
        Path n = dir.toAbsolutePath().normalize().getFileName();
        return n == null ? dir.toString() : n.toString();
    }

    public Path weightsFile() {
        return store.files().getFirst().path();
    }

    public AdapterConfig config() {
        return config;
    }

    public List<Entry> entries() {
        return entries;
    }

    public List<Module> modules() {
        return modules;
    }

    public List<String> warnings() {
        return warnings;
    }

    /** Throws if {@link #close()} has been called: the tensor data is no longer mapped. */
    public void checkOpen() {
        if (closed) {
            throw new Dequant4jException(Dequant4jException.Kind.INVALID_REQUEST, dir, "adapter is closed");
        }
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            store.close();
        }
    }

    /**
     * The 3-D expert parameters of transformers v5's MoE classes (Mixtral, Qwen2-MoE and the models that share their
     * layout) that a {@code target_parameters} LoRA can adapt, in the order the classes register them.
     */
    static final List<String> FUSED_EXPERT_PARAMETERS = List.of("gate_up_proj", "down_proj");

    /** The LoRA tensors of one module, or of one of the nested wrappers PEFT puts on it ({@code depth}). */
    private record Slot(String module, int depth) {}

    /** Groups the keys of the tensor file into modules and checks each module on its own. */
    private static final class Builder {
        private final Path file;
        private final AdapterConfig config;
        private final TensorStore store;
        private final List<String> warnings;
        private final Map<Slot, Map<Role, TensorStore.Ref>> lora = new LinkedHashMap<>();
        private final Map<String, TensorStore.Ref> full = new LinkedHashMap<>();

        Builder(Path file, AdapterConfig config, TensorStore store, List<String> warnings) {
            this.file = file;
            this.config = config;
            this.store = store;
            this.warnings = warnings;
        }

        List<Entry> build() {
            if (store.refs().isEmpty()) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, "holds no tensors");
            }
            Set<String> adapterNames = new TreeSet<>();
            Map<String, TensorStore.Ref> wrapperCopies = new LinkedHashMap<>();
            for (TensorStore.Ref ref : store.refs().values()) {
                AdapterKey k = AdapterKey.parse(ref.name(), config.velora(), config.monteclora());
                if (k == null) {
                    throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, ref.name(), "not a LoRA tensor key dequant4j understands (expected"
                            + " <module>.lora_A.weight, .lora_B.weight, .lora_B.bias, .lora_embedding_A,"
                            + " .lora_embedding_B or .lora_magnitude_vector)");
                }
                if (k.adapterName() != null) {
                    adapterNames.add(k.adapterName());
                }
                switch (k.role()) {
                    case IGNORED -> { }
                    case WRAPPER_COPY -> wrapperCopies.put(k.module(), ref);
                    case FULL -> {
                        TensorStore.Ref prev = full.put(k.module(), ref);
                        if (prev != null) {
                            throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "replaces base tensor '" + k.module()
                                    + "', which '" + prev.name() + "' replaces already");
                        }
                    }
                    default -> {
                        TensorStore.Ref prev = lora.computeIfAbsent(new Slot(k.module(), k.wrapperDepth()),
                                m -> new LinkedHashMap<>()).put(k.role(), ref);
                        if (prev != null) {
                            throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "duplicates '" + prev.name() + "'");
                        }
                    }
                }
            }
            checkWrapperCopies(wrapperCopies);
            if (adapterNames.size() > 1) {
                throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, "holds several adapters " + adapterNames
                        + "; save each adapter on its own and pass them in order");
            }
            List<Entry> out = new ArrayList<>();
            Map<Slot, String> parameters = parameters();
            lora.forEach((slot, parts) -> out.addAll(parameters.containsKey(slot)
                    ? List.of(parameter(slot.module(), parameters.get(slot), parts))
                    : module(slot.module(), parts)));
            full.forEach((target, ref) -> out.add(replacement(target, ref)));
            out.sort(Comparator.comparing((Entry e) -> e.module().tensor(), NaturalOrder.INSTANCE)
                    .thenComparing(e -> e.module().kind()));
            return out;
        }

        /**
         * PEFT's loader skips a wrapper's copies because the replacement saved beside them is what it loads; copies
         * without that replacement would be a trained module silently dropped, so they are refused.
         */
        private void checkWrapperCopies(Map<String, TensorStore.Ref> wrapperCopies) {
            wrapperCopies.forEach((target, ref) -> {
                if (!full.containsKey(target)) {
                    throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, ref.name(),
                            "is a modules_to_save wrapper's copy, but the adapter holds no replacement '" + target
                                    + "' beside it, which is what PEFT loads");
                }
            });
        }

        /**
         * The parameter that each LoRA slot reached through {@code target_parameters} adapts, for the slots that are
         * PEFT {@code ParamWrapper}s (the others are modules, as {@code target_modules} wraps them). PEFT wraps the
         * parameters of one module that a {@code target_parameters} entry names ({@code <module>.<p>} equal to the
         * entry or ending with {@code .<entry>}) one inside the other, in the order the module registers them, so the
         * innermost wrapper, with the most {@code .base_layer} parts in its keys, holds the first. The expert modules
         * of transformers v5 register {@link #FUSED_EXPERT_PARAMETERS} in that order; any other case where the
         * nesting cannot be read with certainty is refused. The merge plan then checks every guess against the
         * base's shapes.
         */
        private Map<Slot, String> parameters() {
            Map<String, List<Slot>> byModule = new LinkedHashMap<>();
            lora.keySet().forEach(s -> byModule.computeIfAbsent(s.module(), m -> new ArrayList<>()).add(s));
            Map<Slot, String> out = new LinkedHashMap<>();
            byModule.forEach((module, slots) -> {
                List<String> named = namedParameters(module);
                int depths = slots.size();
                TensorStore.Ref key = firstKey(slots.getFirst());
                for (Slot s : slots) {
                    if (s.depth() >= depths) {
                        throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, firstKey(s).name(), "is nested " + s.depth() + " wrappers"
                                + " deep (.base_layer) but module '" + module + "' has " + depths + " LoRA wrapper"
                                + (depths == 1 ? "" : "s"));
                    }
                }
                if (named.isEmpty()) {
                    if (depths > 1) {
                        throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, key.name(), "module '" + module + "' has " + depths
                                + " nested LoRA wrappers (.base_layer), but target_parameters in " + CONFIG
                                + " names no parameter of it");
                    }
                    return;
                }
                if (named.size() != depths) {
                    throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, key.name(), "module '" + module + "' has " + depths
                            + " LoRA wrapper" + (depths == 1 ? "" : "s") + " but target_parameters names "
                            + named.size() + " of its parameters " + named + "; cannot tell which wrapper adapts"
                            + " which");
                }
                for (Slot s : slots) {
                    out.put(s, named.get(depths - 1 - s.depth()));
                }
            });
            return out;
        }

        /**
         * The parameters of {@code module} that {@code target_parameters} names, in the order PEFT nests them: the
         * fused expert parameters on an {@code experts} module, a 2-D {@code weight} on any other.
         */
        private List<String> namedParameters(String module) {
            boolean experts = module.equals("experts") || module.endsWith(".experts");
            Set<String> found = new LinkedHashSet<>();
            for (String t : config.targetParameters()) {
                String p = t.substring(t.lastIndexOf('.') + 1);
                String key = module + "." + p;
                if (key.equals(t) || key.endsWith("." + t)) {
                    found.add(p);
                }
            }
            List<String> out = new ArrayList<>();
            if (experts) {
                FUSED_EXPERT_PARAMETERS.stream().filter(found::contains).forEach(out::add);
                found.stream().filter(p -> !FUSED_EXPERT_PARAMETERS.contains(p)).findFirst().ifPresent(p -> {
                    throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, CONFIG + ": target_parameters names parameter '" + p
                            + "' of expert module '" + module + "'; dequant4j merges LoRA on the fused expert"
                            + " parameters " + FUSED_EXPERT_PARAMETERS + " only");
                });
            } else if (found.contains("weight")) {
                out.add("weight");
            }
            return out;
        }

        private static TensorStore.Ref firstKey(Map<Role, TensorStore.Ref> parts) {
            return parts.values().iterator().next();
        }

        private TensorStore.Ref firstKey(Slot s) {
            return firstKey(lora.get(s));
        }

        /**
         * A {@code ParamWrapper} slot: PEFT's {@code ParamWrapper.update_layer} looks up r and alpha under the
         * parameter's name ({@code <module>.<p>}), and gives a 3-D parameter of E experts a {@code lora_A} of
         * {@code [r * E, in]} and a {@code lora_B} of {@code [out, r * E]}; a 2-D one is an ordinary linear LoRA.
         */
        private Entry parameter(String module, String p, Map<Role, TensorStore.Ref> parts) {
            TensorStore.Ref a = parts.get(Role.LORA_A);
            TensorStore.Ref b = parts.get(Role.LORA_B);
            TensorStore.Ref any = firstKey(parts);
            String name = module + "." + p;
            if (config.useDora() || config.loraBias() || config.fanInFanOut()) {
                throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, any.name(), "LoRA on parameter '" + name + "' (target_parameters)"
                        + " with " + (config.useDora() ? "use_dora" : config.loraBias() ? "lora_bias"
                        : "fan_in_fan_out") + " in " + CONFIG + ": PEFT's ParamWrapper refuses that combination");
            }
            for (Role r : parts.keySet()) {
                if (r != Role.LORA_A && r != Role.LORA_B) {
                    throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, parts.get(r).name(), "is not a lora_A/lora_B weight, but"
                            + " parameter '" + name + "' is adapted through target_parameters (PEFT's ParamWrapper"
                            + " has only lora_A and lora_B)");
                }
            }
            if (a == null || b == null) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, any.name(), "parameter '" + name + "' has "
                        + (a != null ? "lora_A" : "lora_B") + " but no " + (a != null ? "lora_B" : "lora_A"));
            }
            checkFloat(a);
            checkFloat(b);
            long[] as = a.entry().shape();
            long[] bs = b.entry().shape();
            if (as.length != 2 || bs.length != 2 || as[0] != bs[1]) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, b.name(), "lora_A " + Arrays.toString(as) + " and lora_B "
                        + Arrays.toString(bs) + " do not make a LoRA pair (expected [n, in] and [out, n])");
            }
            boolean fused = FUSED_EXPERT_PARAMETERS.contains(p);
            int r = config.rFor(name);
            if (!fused && r != as[0]) {
                warnings.add("parameter '" + name + "': the config gives r=" + r + " but the tensors have r=" + as[0]
                        + "; the scaling uses r=" + as[0]);
                r = (int) as[0];
            }
            if (fused && (as[0] % r != 0 || as[0] / r > Integer.MAX_VALUE)) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, a.name(), "has " + as[0] + " rows, which is not r times a number"
                        + " of experts for r=" + r + " (the config's r or rank_pattern for '" + name + "')");
            }
            double alpha = config.alphaFor(name);
            float scaling = config.scaling(r, alpha);
            return new Entry(new Module(module, name, fused ? Kind.EXPERTS : Kind.LINEAR, r, alpha, scaling, false,
                    a.entry().dtype(), List.of(a.name(), b.name())), a, b, null, null, null);
        }

        private List<Entry> module(String module, Map<Role, TensorStore.Ref> p) {
            TensorStore.Ref a = p.get(Role.LORA_A);
            TensorStore.Ref b = p.get(Role.LORA_B);
            TensorStore.Ref ea = p.get(Role.EMBEDDING_A);
            TensorStore.Ref eb = p.get(Role.EMBEDDING_B);
            TensorStore.Ref mag = p.get(Role.MAGNITUDE);
            TensorStore.Ref bias = p.get(Role.LORA_B_BIAS);
            TensorStore.Ref tokens = p.get(Role.TOKENS);
            List<Entry> out = new ArrayList<>();
            if (tokens != null) {
                out.add(tokens(module, tokens));
            }
            boolean linear = a != null || b != null;
            boolean embedding = ea != null || eb != null;
            if (linear && embedding) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, (a != null ? a : b).name(), "module '" + module
                        + "' has both lora_A/lora_B and lora_embedding_A/lora_embedding_B tensors");
            }
            if (!linear && !embedding) {
                TensorStore.Ref orphan = mag != null ? mag : bias;
                if (orphan != null) {
                    throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, orphan.name(), "has no lora_A/lora_B (or lora_embedding_A/B)"
                            + " for module '" + module + "'");
                }
                return out;
            }
            TensorStore.Ref left = linear ? a : ea;
            TensorStore.Ref right = linear ? b : eb;
            String aName = linear ? "lora_A" : "lora_embedding_A";
            String bName = linear ? "lora_B" : "lora_embedding_B";
            if (left == null || right == null) {
                TensorStore.Ref have = left != null ? left : right;
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, have.name(), "module '" + module + "' has "
                        + (left != null ? aName : bName) + " but no " + (left != null ? bName : aName));
            }
            checkFloat(left);
            checkFloat(right);
            long[] as = left.entry().shape();
            long[] bs = right.entry().shape();
            if (as.length != 2 || bs.length != 2) {
                throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, (as.length != 2 ? left : right).name(), "expected a 2-D tensor, got"
                        + " shape " + Arrays.toString(as.length != 2 ? as : bs) + " (LoRA on convolutions is not"
                        + " supported)");
            }
            if (as[0] != bs[1]) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, right.name(), "rank disagrees with " + aName + ": " + aName
                        + " " + Arrays.toString(as) + " has r=" + as[0] + ", " + bName + " " + Arrays.toString(bs)
                        + " has r=" + bs[1]);
            }
            if (as[0] < 1 || as[0] > Integer.MAX_VALUE) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, left.name(), "rank " + as[0] + " is out of range");
            }
            int r = (int) as[0];
            long out0 = bs[0];
            int configR = config.rFor(module);
            if (configR != r) {
                warnings.add("module '" + module + "': the config gives r=" + configR + " but the tensors have r=" + r
                        + "; the scaling uses r=" + r);
            }
            double alpha = config.alphaFor(module);
            float scaling = config.scaling(r, alpha);
            if (config.useDora() && mag == null) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, left.name(), "use_dora is true in " + CONFIG + " but module '"
                        + module + "' has no lora_magnitude_vector");
            }
            if (!config.useDora() && mag != null) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, mag.name(), "is a DoRA magnitude, but use_dora is false in "
                        + CONFIG);
            }
            List<String> keys = new ArrayList<>(List.of(left.name(), right.name()));
            if (mag != null) {
                checkFloat(mag);
                checkShape(mag, new long[] {out0}, "one magnitude per output feature of " + bName + " "
                        + Arrays.toString(bs));
                keys.add(mag.name());
            }
            DType dtype = left.entry().dtype();
            Kind kind = linear ? Kind.LINEAR : Kind.EMBEDDING;
            out.add(new Entry(new Module(module, module + ".weight", kind, r, alpha, scaling, mag != null, dtype,
                    keys), left, right, mag, null, null));
            if (bias != null) {
                if (!linear) {
                    throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, bias.name(), "lora_bias is not supported on embeddings");
                }
                if (!config.loraBias()) {
                    throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, bias.name(), "is a lora_B bias, but lora_bias is false in "
                            + CONFIG);
                }
                checkFloat(bias);
                checkShape(bias, new long[] {out0}, "one value per output feature of lora_B " + Arrays.toString(bs));
                out.add(new Entry(new Module(module, module + ".bias", Kind.LORA_BIAS, r, alpha, scaling, false,
                        bias.entry().dtype(), List.of(bias.name())), null, null, null, bias, null));
            }
            return out;
        }

        private Entry tokens(String module, TensorStore.Ref ref) {
            checkFloat(ref);
            List<Long> indices = config.trainableTokensList();
            if (indices == null) {
                String match = null;
                for (String k : config.trainableTokens().keySet()) {
                    if (module.endsWith(k)) {
                        if (match != null) {
                            throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "trainable_token_indices has two entries"
                                    + " for module '" + module + "': '" + match + "' and '" + k + "'");
                        }
                        match = k;
                    }
                }
                if (match == null) {
                    throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "trainable_token_indices in " + CONFIG
                            + (config.trainableTokens().isEmpty() ? " is not set"
                            : " names no module that ends module '" + module + "' (it has "
                            + config.trainableTokens().keySet() + ")"));
                }
                indices = config.trainableTokens().get(match);
            }
            long[] shape = ref.entry().shape();
            if (shape.length != 2 || shape[0] != indices.size()) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "expected shape [" + indices.size() + ", dim] (one row"
                        + " per trainable token index), got " + Arrays.toString(shape));
            }
            long[] idx = new long[indices.size()];
            Set<Long> seen = new HashSet<>();
            for (int i = 0; i < idx.length; i++) {
                idx[i] = indices.get(i);
                if (!seen.add(idx[i])) {
                    throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "trainable token index " + idx[i]
                            + " appears twice in trainable_token_indices");
                }
            }
            return new Entry(new Module(module, module + ".weight", Kind.TRAINABLE_TOKENS, 0, 0, 0, false,
                    ref.entry().dtype(), List.of(ref.name())), null, null, null, ref, idx);
        }

        private Entry replacement(String target, TensorStore.Ref ref) {
            checkFloat(ref);
            int dot = target.lastIndexOf('.');
            String module = dot < 0 ? target : target.substring(0, dot);
            boolean saved = config.modulesToSave().stream()
                    .anyMatch(m -> module.equals(m) || module.endsWith("." + m));
            Kind kind = !saved && target.endsWith(".bias") ? Kind.BIAS : Kind.MODULES_TO_SAVE;
            return new Entry(new Module(module, target, kind, 0, 0, 0, false, ref.entry().dtype(),
                    List.of(ref.name())), null, null, null, ref, null);
        }

        private void checkFloat(TensorStore.Ref ref) {
            DType d = ref.entry().dtype();
            if (d != DType.F32 && d != DType.F16 && d != DType.BF16) {
                throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, file, ref.name(), "dtype " + d + " is not supported for adapter tensors"
                        + " (F32, F16 or BF16)");
            }
        }

        private void checkShape(TensorStore.Ref ref, long[] want, String why) {
            if (!Arrays.equals(ref.entry().shape(), want)) {
                throw new Dequant4jException(Dequant4jException.Kind.CORRUPT_INPUT, file, ref.name(), "expected shape " + Arrays.toString(want) + " (" + why
                        + "), got " + Arrays.toString(ref.entry().shape()));
            }
        }
    }
}

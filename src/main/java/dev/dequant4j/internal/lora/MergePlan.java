package dev.dequant4j.internal.lora;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.LoraAdapter.Kind;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.nio.file.Path;
import java.util.AbstractMap;
import java.util.AbstractSet;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;

/**
 * Which {@link MergeOp}s each base tensor gets from a list of adapters, checked completely before anything is read
 * or written: every adapter tensor lands on exactly one base tensor of a compatible shape, or the build fails with a
 * {@link Dequant4jException} naming the adapter file and key and what was expected.
 *
 * <h2>Mapping adapter modules to base tensors</h2>
 * The name the adapter gives (see {@link AdapterKey}) is looked up among the base's logical tensors; failing that,
 * <ul>
 *   <li>the model-path / checkpoint-key prefixes that transformers v5 renames for vision-language models are tried
 *       both ways ({@code model.language_model.} / {@code language_model.model.}, {@code model.vision_tower.} /
 *       {@code vision_tower.}, {@code model.multi_modal_projector.} / {@code multi_modal_projector.},
 *       {@code lm_head.} / {@code language_model.lm_head.}); exactly one must exist;</li>
 *   <li>a base whose checkpoint has no {@code lm_head.weight} because the config ties it to the input embedding:
 *       by default ({@link TiedEmbeddings#AS_TRAINED}) the export is the model PEFT trained, where the adapter on
 *       one side leaves the other side's base values alone. A LoRA on {@code lm_head}, its saved frozen base
 *       ({@code lm_head.base_layer.weight}) or a {@code modules_to_save} copy <em>unties</em> it: a new output
 *       tensor ({@link #untied()}) whose base values are the embedding's, which later steps on {@code lm_head}
 *       change instead of the embedding; a LoRA on the embedding unties the output layer too, which keeps the base
 *       embedding's values. A {@code modules_to_save} copy of {@code lm_head} identical to the adapter's copy of
 *       the embedding is dropped. An adapter saved with {@code ensure_weight_tying} whose output-layer factors still are
 *       the embedding's (transposed) trained one delta for both sides: it is applied once and the pair stays tied
 *       (PEFT 0.21 breaks that tie on bf16 and quantized models, and the two sides then train apart). With
 *       {@link TiedEmbeddings#MERGE_AND_UNLOAD}, as PEFT's {@code merge_and_unload}, a LoRA on {@code lm_head} and
 *       its saved base go into the shared embedding tensor instead, and nothing is untied by a LoRA.</li>
 * </ul>
 *
 * <h2>A grown (or shrunk) vocabulary</h2>
 * A fine-tune that added tokens resized the input embedding and the output layer before training, and saved them
 * whole with the adapter ({@code modules_to_save}, or PEFT's {@code save_embedding_layers}). Such a replacement may
 * have a different number of rows than the base tensor when the tensor is a vocabulary matrix (an embedding or output
 * layer by name, with {@code config.vocab_size} rows if the config says) and the row width is the same: the output
 * takes the replacement's shape, and later steps (a LoRA on the embedding, trainable tokens, further adapters) are
 * checked against it. Every vocabulary matrix of the base must end up with the same number of rows, or the build
 * fails. Without a saved replacement the new rows' values are unknown (transformers initialises them at random), so
 * a LoRA alone that needs more rows is refused.
 *
 * <h2>Orientation</h2>
 * A linear LoRA's delta {@code B @ A} is {@code [out, in]}. PEFT transposes it for {@code Conv1D} layers (GPT-2),
 * whose weight is stored {@code [in, out]}, and decides that from the module type, not from the config's
 * {@code fan_in_fan_out} (it overrides a wrong setting with a warning). The stored layout says the same: for a plain
 * base tensor the delta is transposed when only {@code [in, out]} fits, kept when only {@code [out, in]} fits, and for
 * a square weight the config's {@code fan_in_fan_out} decides. A quantized base tensor is always a bitsandbytes
 * linear weight, {@code [out, in]}, so its delta is never transposed. Embedding deltas are always transposed.
 *
 * <h2>Order</h2>
 * Adapters apply in the order given. Within one adapter, a tensor gets its replacement first (modules_to_save,
 * saved embedding, bias), then its LoRA/DoRA delta (its own before one folded in from a tied {@code lm_head}), then
 * the lora_B bias, then trainable-token rows: the order in which PEFT's unload applies them.
 *
 * <p>The payloads are read from the adapter files only when {@link #ops(String)} is called, so the adapters must
 * stay open until the merge is done.
 */
public final class MergePlan {
    /**
     * One adapter module and the base tensor it changes.
     *
     * @param adapter the adapter's index in the list given to {@link #build}
     * @param adapterLabel its name as used in {@link MergeOp}s (the directory name, with {@code #index} if two
     *                     adapters share a name)
     * @param baseTensor the base logical tensor it changes
     * @param module the adapter module (r, alpha, scaling, kind)
     */
    public record Target(int adapter, String adapterLabel, String baseTensor, LoraAdapter.Module module) {}

    private record Step(Target target, Adapter.Entry entry, boolean transposed, boolean aliased, ExpertSlice slice) {}

    /**
     * The part of a fused expert parameter's LoRA that one per-expert base tensor takes: expert {@code expert} of
     * {@code experts}, output rows {@code [outStart, outStart + rows)} of the fused parameter (the gate or the up
     * half of {@code gate_up_proj}, or all of {@code down_proj}).
     */
    private record ExpertSlice(int expert, int experts, long outStart, long rows) {}

    /**
     * The per-expert tensor names that transformers v5 splits its fused expert parameters into when it saves a
     * checkpoint, and fuses again on load ({@code conversion_mapping.py}): {@code gate_up_proj[e]} is
     * {@code cat(gate, up)} along the output rows, {@code down_proj[e]} is {@code down}, none transposed.
     */
    private record ExpertLayout(String gate, String up, String down) {}

    private static final List<ExpertLayout> EXPERT_LAYOUTS = List.of(
            new ExpertLayout("w1", "w3", "w2"),
            new ExpertLayout("gate_proj", "up_proj", "down_proj"));

    private static final String[][] RENAMES = {
        {"model.language_model.", "language_model.model."},
        {"model.vision_tower.", "vision_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
        {"lm_head.", "language_model.lm_head."},
    };

    /** Module renames inside a name that transformers v5 applies on load: Mixtral's block_sparse_moe became mlp. */
    private static final String[][] INFIX_RENAMES = {
        {".mlp.", ".block_sparse_moe."},
    };

    private final Map<String, List<Step>> steps;
    private final List<Target> targets;
    private final Map<String, long[]> resized;
    private final Map<String, String> untied;

    private MergePlan(Map<String, List<Step>> steps, Map<String, long[]> resized, Map<String, String> untied) {
        this.steps = steps;
        this.resized = resized;
        this.untied = untied;
        List<Target> t = new ArrayList<>();
        steps.values().forEach(l -> l.forEach(s -> t.add(s.target())));
        t.sort(Comparator.comparingInt(Target::adapter));
        this.targets = List.copyOf(t);
    }

    /** Maps and checks every adapter against the base, {@link TiedEmbeddings#AS_TRAINED}; see the class comment. */
    public static MergePlan build(Checkpoint base, List<LoraAdapter> adapters) {
        return build(base, adapters, TiedEmbeddings.AS_TRAINED);
    }

    /** Maps and checks every adapter against the base; see the class comment. */
    public static MergePlan build(Checkpoint base, List<LoraAdapter> adapters, TiedEmbeddings tiedEmbeddings) {
        Map<String, LogicalTensor> logical = Internals.checkpoint().logical(base);
        Map<String, List<Step>> byTensor = new HashMap<>();
        Map<String, Integer> nameCount = new HashMap<>();
        Shapes shapes = new Shapes(base, logical);
        for (LoraAdapter a : adapters) {
            nameCount.merge(a.name(), 1, Integer::sum);
        }
        for (int i = 0; i < adapters.size(); i++) {
            LoraAdapter a = adapters.get(i);
            String label = nameCount.get(a.name()) > 1 ? a.name() + "#" + i : a.name();
            Adapter impl = AdapterAccess.of(a);
            impl.checkOpen();
            Mapper m = new Mapper(base, impl, i, label, shapes, tiedEmbeddings);
            List<Step> mine = m.map();
            mine.sort(Comparator.comparingInt((Step s) -> phase(s.target().module().kind())).thenComparing(Step::aliased));
            for (Step s : mine) {
                byTensor.computeIfAbsent(s.target().baseTensor(), k -> new ArrayList<>()).add(s);
            }
        }
        Map<String, List<Step>> ordered = new LinkedHashMap<>();
        List<String> names = new ArrayList<>();
        base.tensors().forEach(t -> names.add(t.name()));
        names.addAll(shapes.untied.keySet());
        for (String n : names) {
            List<Step> s = byTensor.get(n);
            if (s != null) {
                ordered.put(n, List.copyOf(s));
            }
        }
        return new MergePlan(Collections.unmodifiableMap(ordered), shapes.checkVocabulary(),
                Collections.unmodifiableMap(new LinkedHashMap<>(shapes.untied)));
    }

    /**
     * Output layers that an adapter trained separately from the input embedding they were tied to: the output
     * tensor's name to the embedding whose values are its base. Such a tensor is not in the base checkpoint, and the
     * exported model's config must no longer tie them.
     */
    public Map<String, String> untied() {
        return untied;
    }

    /**
     * The output shape of a base tensor whose shape an adapter changed (a resized vocabulary), or null if it keeps
     * the base's shape.
     */
    public long[] resizedShape(String tensor) {
        long[] s = resized.get(tensor);
        return s == null ? null : s.clone();
    }

    /** The number of rows of every vocabulary matrix after the merge, if an adapter resized them; else -1. */
    public long vocabularySize() {
        return resized.isEmpty() ? -1 : resized.values().iterator().next()[0];
    }

    /** Replacements, then deltas, then the lora_B bias, then token rows: the order of PEFT's unload. */
    private static int phase(Kind k) {
        return switch (k) {
            case MODULES_TO_SAVE, BIAS -> 0;
            case LINEAR, EMBEDDING, EXPERTS -> 1;
            case LORA_BIAS -> 2;
            case TRAINABLE_TOKENS -> 3;
        };
    }

    /** The base tensors that change, in the base's tensor order. */
    public Set<String> tensors() {
        return steps.keySet();
    }

    /**
     * The steps for every changed base tensor (keyed by logical tensor name, in the base's order), in adapter order.
     * The map is a view: each {@code get} or {@code getValue} reads the payloads from the adapter files anew, so ask
     * for a tensor's steps when you process it and drop them afterwards.
     */
    public Map<String, List<MergeOp>> ops() {
        return new AbstractMap<>() {
            @Override
            public Set<Entry<String, List<MergeOp>>> entrySet() {
                return new AbstractSet<>() {
                    @Override
                    public Iterator<Entry<String, List<MergeOp>>> iterator() {
                        Iterator<String> keys = steps.keySet().iterator();
                        return new Iterator<>() {
                            @Override
                            public boolean hasNext() {
                                return keys.hasNext();
                            }

                            @Override
                            public Entry<String, List<MergeOp>> next() {
                                String k = keys.next();
                                return new AbstractMap.SimpleImmutableEntry<>(k, null) {
                                    @Override
                                    public List<MergeOp> getValue() {
                                        return ops(k);
                                    }
                                };
                            }
                        };
                    }

                    @Override
                    public int size() {
                        return steps.size();
                    }
                };
            }

            @Override
            public List<MergeOp> get(Object key) {
                return key instanceof String s && steps.containsKey(s) ? ops(s) : null;
            }

            @Override
            public boolean containsKey(Object key) {
                return steps.containsKey(key);
            }

            @Override
            public Set<String> keySet() {
                return steps.keySet();
            }
        };
    }

    /** The steps for one base tensor (empty if no adapter changes it), reading their payloads now. */
    public List<MergeOp> ops(String tensor) {
        List<Step> s = steps.get(tensor);
        if (s == null) {
            return List.of();
        }
        List<MergeOp> out = new ArrayList<>(s.size());
        for (Step step : s) {
            out.add(op(step));
        }
        return out;
    }

    /** Every adapter module with the base tensor it changes, in adapter order (for manifests and reports). */
    public List<Target> targets() {
        return targets;
    }

    private static MergeOp op(Step s) {
        Adapter.Entry e = s.entry();
        LoraAdapter.Module m = e.module();
        String label = s.target().adapterLabel();
        return switch (m.kind()) {
            case MODULES_TO_SAVE, BIAS -> new MergeOp.Replace(label, new RefValues(e.values()));
            case LORA_BIAS -> new MergeOp.AddScaled(label, floats(e.values()), m.scaling());
            case TRAINABLE_TOKENS -> new MergeOp.ReplaceRows(label, e.tokenIndices(), floats(e.values()));
            case EXPERTS -> expertLora(s, label);
            case LINEAR, EMBEDDING -> {
                float[] a = floats(e.a());
                float[] b = floats(e.b());
                long[] as = e.a().entry().shape();
                long[] bs = e.b().entry().shape();
                boolean t = s.transposed();
                float[] left = t ? transpose(a, (int) as[0], (int) as[1]) : b;
                float[] right = t ? transpose(b, (int) bs[0], (int) bs[1]) : a;
                yield m.dora()
                        ? new MergeOp.Dora(label, left, right, m.r(), m.scaling(), floats(e.magnitude()), t)
                        : new MergeOp.Lora(label, left, right, m.r(), m.scaling());
            }
        };
    }

    /**
     * One expert's share of a {@code ParamWrapper} LoRA, as PEFT's {@code ParamWrapper.get_delta_weight} computes it:
     * {@code A.reshape(E, r, in)[e]} (rows {@code e*r .. e*r+r-1} of {@code lora_A}) and
     * {@code B.reshape(out, r, E)[:, :, e]} (columns {@code k*E + e} of {@code lora_B}: the experts are interleaved
     * in B but not in A), restricted to the slice's output rows.
     */
    private static MergeOp expertLora(Step s, String label) {
        Adapter.Entry e = s.entry();
        ExpertSlice x = s.slice();
        int r = e.module().r();
        long in = e.a().entry().shape()[1];
        long cols = e.b().entry().shape()[1];
        float[] right = new float[checkedSize(e.a(), r * in)];
        new PlainTensor(e.a()).readF32((long) x.expert() * r * in, right, 0, right.length);
        float[] rowsOfB = new float[checkedSize(e.b(), x.rows() * cols)];
        new PlainTensor(e.b()).readF32(x.outStart() * cols, rowsOfB, 0, rowsOfB.length);
        float[] left = new float[(int) (x.rows() * r)];
        for (int i = 0; i < x.rows(); i++) {
            for (int k = 0; k < r; k++) {
                left[i * r + k] = rowsOfB[(int) (i * cols + (long) k * x.experts() + x.expert())];
            }
        }
        return new MergeOp.Lora(label, left, right, r, e.module().scaling());
    }

    private static int checkedSize(TensorStore.Ref ref, long n) {
        if (n > Integer.MAX_VALUE - 8) {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, ref.path(), ref.name(), n + " elements per expert are too many for one LoRA"
                    + " factor");
        }
        return (int) n;
    }

    /** Row-major {@code rows x cols} to its transpose. */
    private static float[] transpose(float[] x, int rows, int cols) {
        float[] out = new float[x.length];
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < cols; j++) {
                out[j * rows + i] = x[i * cols + j];
            }
        }
        return out;
    }

    private static float[] floats(TensorStore.Ref ref) {
        long n = ref.entry().numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new Dequant4jException(Dequant4jException.Kind.UNSUPPORTED_INPUT, ref.path(), ref.name(), n + " elements are too many for one LoRA factor");
        }
        float[] out = new float[(int) n];
        new PlainTensor(ref).readF32(0, out, 0, out.length);
        // The copy is what the merge uses: the mapped pages would otherwise stay in the process's resident memory
        // until the export ends (161 MB for an r = 16 adapter of a Llama-3-8B; they stay in the page cache).
        ref.unload(0, ref.entry().byteSize());
        return out;
    }

    /** An adapter tensor read lazily as float32 (F16 and BF16 widen exactly). */
    private record RefValues(TensorStore.Ref ref) implements MergeOp.ValuesSource {
        @Override
        public long numel() {
            return ref.entry().numel();
        }

        @Override
        public void readF32(long start, float[] dst, int dstOff, int count) {
            new PlainTensor(ref).readF32(start, dst, dstOff, count);
        }
    }

    /** Maps the entries of one adapter onto the base. */
    private static final class Mapper {
        private final Checkpoint base;
        private final Map<String, LogicalTensor> logical;
        private final Adapter adapter;
        private final int index;
        private final String label;
        private final Path file;
        private final Shapes shapes;
        private final boolean mergeAndUnload;
        /** Deltas on either side of a tied pair go into the one shared tensor (see {@link TiedEmbeddings}). */
        private boolean shared;

        /** {@code logical} is {@code shapes.all}: the base's tensors plus the output layers untied so far. */
        Mapper(Checkpoint base, Adapter adapter, int index, String label, Shapes shapes, TiedEmbeddings tied) {
            this.base = base;
            this.logical = shapes.all;
            this.adapter = adapter;
            this.index = index;
            this.label = label;
            this.file = adapter.weightsFile();
            this.shapes = shapes;
            this.mergeAndUnload = tied == TiedEmbeddings.MERGE_AND_UNLOAD;
        }

        List<Step> map() {
            List<Step> out = new ArrayList<>();
            Map<String, Adapter.Entry> replacements = new HashMap<>();
            for (Adapter.Entry e : adapter.entries()) {
                if (e.module().kind() == Kind.MODULES_TO_SAVE) {
                    replacements.put(e.module().tensor(), e);
                }
            }
            Adapter.Entry tiedFactors = tiedFactors();
            shared = mergeAndUnload || tiedFactors != null;
            List<Adapter.Entry> inOrder = new ArrayList<>(adapter.entries());
            // Replacements first, as they will be applied: one that resizes a tensor changes what later steps fit.
            inOrder.sort(Comparator.comparingInt(e -> phase(e.module().kind())));
            for (Adapter.Entry e : inOrder) {
                if (e.module().kind() == Kind.EXPERTS) {
                    out.addAll(experts(e));
                    continue;
                }
                String name = e.module().tensor();
                String found = resolve(name);
                boolean aliased = false;
                if (found == null && isLmHead(name) && tied()) {
                    if (e.module().kind() == Kind.MODULES_TO_SAVE) {
                        if (sameAsEmbeddingReplacement(e, replacements)) {
                            continue;
                        }
                        // a LoRA's frozen base saved beside it: PEFT loads it into the shared parameter
                        found = shared && isLoraBase(e) ? tiedEmbedding(e, e.values().entry().shape())
                                : untie(e, e.values().entry().shape());
                    }
                    if (e.module().kind() == Kind.LINEAR) {
                        long[] delta = {e.b().entry().shape()[0], e.a().entry().shape()[1]};
                        if (e == tiedFactors && !mergeAndUnload) {
                            continue;  // the embedding's own factors, applied there once
                        }
                        found = shared ? tiedEmbedding(e, delta) : untie(e, delta);
                        aliased = shared;
                    }
                } else if (found != null && e.module().kind() == Kind.EMBEDDING && !shared && tied()) {
                    untieOutputFrom(found);
                }
                if (found == null) {
                    throw fail(e, "no base tensor '" + name + "' in " + base.path() + hint(name)
                            + " (is this adapter for another model?)");
                }
                LogicalTensor t = logical.get(found);
                if (!t.isFloat()) {
                    throw fail(e, "base tensor '" + found + "' has dtype " + t.dtype() + ", not a float type");
                }
                boolean transposed = check(e, found, t);
                out.add(new Step(new Target(index, label, found, e.module()), e, transposed, aliased, null));
            }
            return out;
        }

        /** Elements either LoRA matrix may always have, whatever the base weight's size (64 MiB in F32). */
        static final long MAX_SMALL_PAYLOAD = 1L << 24;

        /**
         * The pair is read into memory to merge: a rank that makes either matrix larger than the base weight itself
         * (and larger than {@link #MAX_SMALL_PAYLOAD} elements, so a small head may take a rank above its width) can
         * add nothing a full-rank delta could not, and is refused before anything is allocated: an adapter claiming
         * rank 22,000,000 in a sparse file would otherwise ask for gigabytes.
         */
        private void checkPayloadSize(Adapter.Entry e, String name, long[] base, long[] as, long[] bs) {
            long limit = Math.max(MAX_SMALL_PAYLOAD, base[0] * base[1]);
            long a = as[0] * as[1];
            long b = bs[0] * bs[1];
            if (Math.max(a, b) > limit) {
                throw fail(e, "rank " + as[0] + " makes lora_A " + Arrays.toString(as) + " and lora_B "
                        + Arrays.toString(bs) + " larger than base tensor '" + name + "' " + Arrays.toString(base)
                        + " itself (at most " + limit + " elements each); refused");
            }
        }

        /** Checks shapes against tensor {@code name} (held by {@code t}); returns whether the delta is transposed. */
        private boolean check(Adapter.Entry e, String name, LogicalTensor t) {
            long[] s = shapes.of(name);
            LoraAdapter.Module m = e.module();
            return switch (m.kind()) {
                case LINEAR -> {
                    long[] as = e.a().entry().shape();
                    long[] bs = e.b().entry().shape();
                    long[] normal = {bs[0], as[1]};
                    long[] flipped = {as[1], bs[0]};
                    boolean fitsNormal = Arrays.equals(s, normal);
                    boolean fitsFlipped = t.kind() == QuantKind.PLAIN && Arrays.equals(s, flipped);
                    if (!fitsNormal && !fitsFlipped) {
                        throw fail(e, "does not fit base tensor '" + name + "' " + Arrays.toString(s) + ": lora_A "
                                + Arrays.toString(as) + " and lora_B " + Arrays.toString(bs) + " make a delta of "
                                + Arrays.toString(normal) + " (or its transpose for a Conv1D weight)"
                                + " (is this adapter for another model?)");
                    }
                    checkPayloadSize(e, name, s, as, bs);
                    yield fitsNormal && fitsFlipped ? adapter.config().fanInFanOut() : fitsFlipped;
                }
                case EMBEDDING -> {
                    long[] as = e.a().entry().shape();
                    long[] bs = e.b().entry().shape();
                    long[] want = {as[1], bs[0]};
                    if (!Arrays.equals(s, want)) {
                        throw fail(e, "does not fit base tensor '" + name + "' " + Arrays.toString(s)
                                + ": lora_embedding_A " + Arrays.toString(as) + " and lora_embedding_B "
                                + Arrays.toString(bs) + " need an embedding of " + Arrays.toString(want)
                                + resizeHint(s, want));
                    }
                    checkPayloadSize(e, name, s, as, bs);
                    yield true;
                }
                case LORA_BIAS, MODULES_TO_SAVE, BIAS -> {
                    long[] want = e.values().entry().shape();
                    if (m.kind() == Kind.MODULES_TO_SAVE && shapes.resize(name, want, e)) {
                        yield false;
                    }
                    if (!Arrays.equals(s, want)) {
                        throw fail(e, "has shape " + Arrays.toString(want) + " but base tensor '" + name
                                + "' is " + Arrays.toString(s) + resizeHint(s, want));
                    }
                    yield false;
                }
                case EXPERTS -> throw new IllegalStateException("expert LoRA is mapped per expert, not here");
                case TRAINABLE_TOKENS -> {
                    long[] ds = e.values().entry().shape();
                    if (s.length != 2 || s[1] != ds[1]) {
                        throw fail(e, "has rows of " + ds[1] + " values but base tensor '" + name + "' is "
                                + Arrays.toString(s));
                    }
                    for (long row : e.tokenIndices()) {
                        if (row >= s[0]) {
                            throw fail(e, "trainable token index " + row + " is outside base tensor '" + name
                                    + "' " + Arrays.toString(s) + resizeHint(s, new long[] {row + 1, s[1]}));
                        }
                    }
                    yield false;
                }
            };
        }

        private static String resizeHint(long[] base, long[] want) {
            return base.length == 2 && want.length == 2 && base[1] == want[1] && base[0] != want[0]
                    ? " (a resized vocabulary? the adapter must then carry the whole resized embedding and output"
                    + " layer, as modules_to_save or saved embedding layers)" : "";
        }

        private String resolve(String name) {
            if (logical.containsKey(name)) {
                return name;
            }
            Set<String> found = new LinkedHashSet<>();
            for (String renamed : infixRenamed(name)) {
                if (logical.containsKey(renamed)) {
                    found.add(renamed);
                }
            }
            for (String[] pair : RENAMES) {
                for (int dir = 0; dir < 2; dir++) {
                    String from = pair[dir];
                    String to = pair[1 - dir];
                    if (name.startsWith(from) && logical.containsKey(to + name.substring(from.length()))) {
                        found.add(to + name.substring(from.length()));
                    }
                }
            }
            return found.size() == 1 ? found.iterator().next() : null;
        }

        /** {@code name} with each of {@link #INFIX_RENAMES} applied, either way (none if it has no such part). */
        private static List<String> infixRenamed(String name) {
            List<String> out = new ArrayList<>();
            for (String[] pair : INFIX_RENAMES) {
                for (int dir = 0; dir < 2; dir++) {
                    if (name.contains(pair[dir])) {
                        out.add(name.replace(pair[dir], pair[1 - dir]));
                    }
                }
            }
            return out;
        }

        /**
         * Maps a LoRA on a fused expert parameter onto the per-expert tensors the base stores (see
         * {@link ExpertLayout}): every expert's tensor gets its slice, and the number of experts, the input width
         * and the output rows must all agree with the adapter's factors.
         */
        private List<Step> experts(Adapter.Entry e) {
            LoraAdapter.Module m = e.module();
            String param = m.tensor().substring(m.module().length() + 1);
            String fused = resolve(m.tensor());
            if (fused != null) {
                throw fail(e, "targets the fused expert parameter '" + m.tensor() + "', which " + base.path()
                        + " stores fused as '" + fused + "'; dequant4j merges target_parameters LoRA into checkpoints"
                        + " that store the experts one by one (as transformers 5 saves Mixtral and Qwen2-MoE)");
            }
            boolean gateUp = param.equals("gate_up_proj");
            List<String> prefixes = new ArrayList<>(List.of(m.module()));
            prefixes.addAll(infixRenamed(m.module()));
            String prefix = null;
            ExpertLayout layout = null;
            for (String p : prefixes) {
                for (ExpertLayout l : EXPERT_LAYOUTS) {
                    if (logical.containsKey(expertTensor(p, 0, gateUp ? l.gate() : l.down()))) {
                        if (prefix != null) {
                            throw fail(e, "fits the per-expert tensors under both '" + prefix + "' and '" + p
                                    + "' in " + base.path());
                        }
                        prefix = p;
                        layout = l;
                    }
                }
            }
            if (prefix == null) {
                throw fail(e, "targets expert parameter '" + m.tensor() + "' but " + base.path() + " has no"
                        + " per-expert tensors '" + m.module() + ".0.{w1,w3,w2|gate_proj,up_proj,down_proj}.weight'"
                        + hint(m.module() + ".0.x.weight") + " (is this adapter for another model?)");
            }
            long[] as = e.a().entry().shape();
            long[] bs = e.b().entry().shape();
            long experts = as[0] / m.r();
            int inBase = 0;
            while (logical.containsKey(expertTensor(prefix, inBase, gateUp ? layout.gate() : layout.down()))) {
                inBase++;
            }
            if (experts != inBase) {
                throw fail(e, "lora_A " + Arrays.toString(as) + " holds r=" + m.r() + " for " + experts + " experts,"
                        + " but " + base.path() + " has " + inBase + " experts under '" + prefix + "'");
            }
            List<Step> out = new ArrayList<>();
            for (int i = 0; i < inBase; i++) {
                if (gateUp) {
                    String g = expertTensor(prefix, i, layout.gate());
                    String u = expertTensor(prefix, i, layout.up());
                    long[] gs = expertShape(e, g);
                    long[] us = expertShape(e, u);
                    if (!Arrays.equals(gs, us) || gs[1] != as[1] || 2 * gs[0] != bs[0]) {
                        throw fail(e, "does not fit expert " + i + ": lora_A " + Arrays.toString(as) + " and lora_B "
                                + Arrays.toString(bs) + " make gate_up_proj deltas of [" + bs[0] + ", " + as[1]
                                + "] per expert, but '" + g + "' is " + Arrays.toString(gs) + " and '" + u + "' is "
                                + Arrays.toString(us));
                    }
                    out.add(expertStep(e, g, new ExpertSlice(i, inBase, 0, gs[0])));
                    out.add(expertStep(e, u, new ExpertSlice(i, inBase, gs[0], us[0])));
                } else {
                    String d = expertTensor(prefix, i, layout.down());
                    long[] ds = expertShape(e, d);
                    if (ds[0] != bs[0] || ds[1] != as[1]) {
                        throw fail(e, "does not fit expert " + i + ": lora_A " + Arrays.toString(as) + " and lora_B "
                                + Arrays.toString(bs) + " make down_proj deltas of [" + bs[0] + ", " + as[1]
                                + "] per expert, but '" + d + "' is " + Arrays.toString(ds));
                    }
                    out.add(expertStep(e, d, new ExpertSlice(i, inBase, 0, ds[0])));
                }
            }
            return out;
        }

        private static String expertTensor(String prefix, int expert, String name) {
            return prefix + "." + expert + "." + name + ".weight";
        }

        private long[] expertShape(Adapter.Entry e, String tensor) {
            LogicalTensor t = logical.get(tensor);
            if (t == null || !t.isFloat()) {
                throw fail(e, t == null ? "needs base tensor '" + tensor + "', which " + base.path() + " lacks"
                        : "base tensor '" + tensor + "' has dtype " + t.dtype() + ", not a float type");
            }
            long[] s = shapes.of(tensor);
            if (s.length != 2) {
                throw fail(e, "base tensor '" + tensor + "' is " + Arrays.toString(s) + ", not a 2-D expert weight");
            }
            return s;
        }

        private Step expertStep(Adapter.Entry e, String tensor, ExpertSlice slice) {
            return new Step(new Target(index, label, tensor, e.module()), e, false, false, slice);
        }

        private static boolean isLmHead(String tensor) {
            return tensor.equals("lm_head.weight") || tensor.endsWith(".lm_head.weight");
        }

        /** The base ties its output layer to the input embedding (config says so, or does not say otherwise). */
        private boolean tied() {
            JsonObject c = Internals.checkpoint().config(base);
            if (c == null) {
                return true;
            }
            if (c.get("tie_word_embeddings") instanceof JsonBoolean b) {
                return b == JsonBoolean.TRUE;
            }
            if (c.get("text_config") instanceof JsonObject tc && tc.get("tie_word_embeddings") instanceof JsonBoolean b) {
                return b == JsonBoolean.TRUE;
            }
            return true;
        }

        /** The input embedding a tied output layer of shape {@code want} shares its tensor with. */
        private String tiedEmbedding(Adapter.Entry e, long[] want) {
            String prefix = e.module().module().substring(0, e.module().module().length() - "lm_head".length());
            List<String> candidates = new ArrayList<>();
            for (Map.Entry<String, LogicalTensor> t : logical.entrySet()) {
                String n = t.getKey();
                if (isInputEmbeddingName(n) && Arrays.equals(shapes.of(n), want)) {
                    candidates.add(n);
                }
            }
            if (candidates.size() > 1) {
                candidates.removeIf(n -> !n.startsWith(prefix));
            }
            if (candidates.size() != 1) {
                throw fail(e, "targets the tied output layer '" + e.module().tensor() + "', which the base stores only"
                        + " as its input embedding, but " + (candidates.isEmpty() ? "no" : candidates.size())
                        + " embedding tensors of shape " + Arrays.toString(want) + " were found"
                        + (candidates.isEmpty() ? "" : ": " + candidates));
            }
            return candidates.getFirst();
        }

        /** A LoRA's frozen base layer, which PEFT saves beside the factors of a targeted embedding or output layer. */
        private static boolean isLoraBase(Adapter.Entry e) {
            return e.module().keys().stream().anyMatch(k -> k.contains(".base_layer."));
        }

        /**
         * With {@code ensure_weight_tying}, PEFT ties the LoRA of a tied output layer to the embedding's:
         * {@code lora_A}/{@code lora_B} are the embedding's {@code lora_embedding_B}/{@code lora_embedding_A},
         * transposed. The tie holds only while both stay one tensor: PEFT 0.21 casts the factors of a bf16 or
         * quantized model to fp32 one by one, which breaks it, and the two then train apart. Returns the output
         * layer's LoRA if its factors still are the embedding's (one delta for the shared tensor), else null.
         */
        private Adapter.Entry tiedFactors() {
            if (!adapter.config().ensureWeightTying()) {
                return null;
            }
            for (Adapter.Entry lm : adapter.entries()) {
                if (lm.module().kind() != Kind.LINEAR || !isLmHead(lm.module().tensor())) {
                    continue;
                }
                for (Adapter.Entry emb : adapter.entries()) {
                    if (emb.module().kind() == Kind.EMBEDDING && isInputEmbeddingName(emb.module().tensor())
                            && transposed(emb.b(), lm.a()) && transposed(emb.a(), lm.b())) {
                        return lm;
                    }
                }
            }
            return null;
        }

        private static boolean transposed(TensorStore.Ref x, TensorStore.Ref y) {
            long[] xs = x.entry().shape();
            long[] ys = y.entry().shape();
            if (xs.length != 2 || ys.length != 2 || xs[0] != ys[1] || xs[1] != ys[0]) {
                return false;
            }
            float[] a = floats(x);
            float[] b = floats(y);
            for (int i = 0; i < xs[0]; i++) {
                for (int j = 0; j < xs[1]; j++) {
                    if (Float.floatToIntBits(a[(int) (i * xs[1] + j)]) != Float.floatToIntBits(b[(int) (j * xs[0] + i)])) {
                        return false;
                    }
                }
            }
            return true;
        }

        /**
         * A LoRA on the input embedding of a tied model changes only the embedding in the model PEFT trains: the
         * output layer keeps the base's values, so it becomes its own tensor.
         */
        private void untieOutputFrom(String embedding) {
            if (!isInputEmbeddingName(embedding)) {
                return;
            }
            String name = outputName(embedding, "lm_head.weight");
            if (!logical.containsKey(name)) {
                shapes.untie(name, embedding);
            }
        }

        /** The output layer beside {@code embedding}: {@code language_model.lm_head.weight} for
         * {@code language_model.model.embed_tokens.weight}, else {@code fallback}. */
        private static String outputName(String embedding, String fallback) {
            return embedding.endsWith("model.embed_tokens.weight")
                    ? embedding.substring(0, embedding.length() - "model.embed_tokens.weight".length())
                    + "lm_head.weight" : fallback;
        }

        /**
         * An output layer of shape {@code want} that an adapter changes apart from the input embedding it was tied
         * to (a trained copy, a LoRA's saved base, a LoRA): the output tensor it becomes, named as the embedding's
         * model names it ({@code language_model.lm_head.weight} beside {@code language_model.model.embed_tokens}).
         */
        private String untie(Adapter.Entry e, long[] want) {
            String module = e.module().module();
            String prefix = module.substring(0, module.length() - "lm_head".length());
            List<String> candidates = new ArrayList<>();
            for (Map.Entry<String, LogicalTensor> t : logical.entrySet()) {
                String n = t.getKey();
                long[] s = shapes.of(n);
                if (isInputEmbeddingName(n) && want.length == 2 && s.length == 2 && s[1] == want[1]) {
                    candidates.add(n);
                }
            }
            if (candidates.size() > 1) {
                candidates.removeIf(n -> !n.startsWith(prefix));
            }
            if (candidates.size() != 1) {
                throw fail(e, "changes the tied output layer '" + e.module().tensor() + "', which the base stores"
                        + " only as its input embedding, but " + (candidates.isEmpty() ? "no" : candidates.size())
                        + " embedding tensors with rows of " + (want.length == 2 ? want[1] : "?")
                        + " values were found" + (candidates.isEmpty() ? "" : ": " + candidates));
            }
            String embedding = candidates.getFirst();
            String name = outputName(embedding, e.module().tensor());
            if (!logical.containsKey(name)) {
                shapes.untie(name, embedding);
            }
            return name;
        }

        private boolean sameAsEmbeddingReplacement(Adapter.Entry lmHead, Map<String, Adapter.Entry> replacements) {
            for (Adapter.Entry r : replacements.values()) {
                String n = r.module().tensor();
                if (r != lmHead && n.endsWith("embed_tokens.weight") && logical.containsKey(n)
                        && r.values().entry().dtype() == lmHead.values().entry().dtype()
                        && Arrays.equals(r.values().entry().shape(), lmHead.values().entry().shape())
                        && r.values().data().mismatch(lmHead.values().data()) == -1) {
                    return true;
                }
            }
            return false;
        }

        private String hint(String name) {
            String[] parts = name.split("\\.");
            if (parts.length < 3) {
                return "";
            }
            String tail = "." + String.join(".", Arrays.copyOfRange(parts, parts.length - 3, parts.length));
            Set<String> similar = new TreeSet<>();
            for (String n : logical.keySet()) {
                if (n.endsWith(tail)) {
                    similar.add(n);
                }
            }
            return similar.isEmpty() ? "" : " (the base has " + similar.iterator().next()
                    + (similar.size() > 1 ? " and " + (similar.size() - 1) + " more like it" : "") + ")";
        }

        private Dequant4jException fail(Adapter.Entry e, String detail) {
            return new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, file, e.module().keys().getFirst(), detail);
        }
    }

    /** The shape every base tensor will have after the steps mapped so far; see "A grown vocabulary" above. */
    private static final class Shapes {
        private final Checkpoint base;
        /** The base's logical tensors, plus the untied output layers (held by their embedding's tensor). */
        final Map<String, LogicalTensor> all;
        final Map<String, String> untied = new LinkedHashMap<>();
        private final Map<String, long[]> resized = new LinkedHashMap<>();
        private final Map<String, Adapter.Entry> resizedBy = new HashMap<>();

        Shapes(Checkpoint base, Map<String, LogicalTensor> logical) {
            this.base = base;
            this.all = new LinkedHashMap<>(logical);
        }

        long[] of(String tensor) {
            long[] s = resized.get(tensor);
            return s != null ? s.clone() : all.get(tensor).shape();
        }

        /**
         * Records a whole replacement of {@code t} by a tensor of shape {@code want}; returns true if that is a
         * vocabulary resize, false if the shapes must simply agree.
         */
        boolean resize(String name, long[] want, Adapter.Entry by) {
            long[] s = of(name);
            long[] original = all.get(name).shape();
            boolean vocabulary = s.length == 2 && want.length == 2 && s[1] == want[1] && s[0] != want[0]
                    && want[0] > 0 && isVocabularyName(name) && vocabSize().map(v -> v == original[0])
                    .orElse(true);
            if (vocabulary) {
                if (want[0] == original[0]) {
                    resized.remove(name);
                } else {
                    resized.put(name, want.clone());
                }
                resizedBy.putIfAbsent(name, by);
            }
            return vocabulary;
        }

        /** Adds output tensor {@code name}, untied from {@code embedding}, whose values are its base. */
        void untie(String name, String embedding) {
            all.put(name, all.get(embedding));
            untied.put(name, embedding);
        }

        private Optional<Long> vocabSize() {
            JsonObject c = Internals.checkpoint().config(base);
            for (JsonObject o = c; o != null; o = o.get("text_config") instanceof JsonObject t ? t : null) {
                if (o.get("vocab_size") instanceof JsonNumber n && n.isLong()) {
                    return Optional.of(n.longValue());
                }
            }
            return Optional.empty();
        }

        /** Every vocabulary matrix must end with the same number of rows; returns the resized tensors' shapes. */
        Map<String, long[]> checkVocabulary() {
            if (resized.isEmpty()) {
                return Map.of();
            }
            Map.Entry<String, long[]> first = resized.entrySet().iterator().next();
            long rows = first.getValue()[0];
            long oldRows = all.get(first.getKey()).shape()[0];
            Adapter.Entry by = resizedBy.get(first.getKey());
            for (Map.Entry<String, LogicalTensor> t : all.entrySet()) {
                long[] s = t.getValue().shape();
                if (!isVocabularyName(t.getKey()) || s.length != 2 || s[0] != oldRows) {
                    continue;
                }
                long now = of(t.getKey())[0];
                if (now != rows) {
                    throw new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, by.values().path(), by.values().name(), "resizes the vocabulary"
                            + " of '" + first.getKey() + "' from " + oldRows + " to " + rows + " rows, but '"
                            + t.getKey() + "' ends with " + now + " rows: the adapters must resize every embedding"
                            + " and output layer alike");
                }
            }
            return Collections.unmodifiableMap(new LinkedHashMap<>(resized));
        }
    }

    /** An input embedding, by the names transformers models give them. */
    static boolean isInputEmbeddingName(String n) {
        return n.endsWith("embed_tokens.weight") || n.endsWith(".wte.weight") || n.equals("wte.weight")
                || n.endsWith("word_embeddings.weight") || n.endsWith("embed_in.weight") || n.equals("shared.weight");
    }

    /** An input embedding or output layer, by the names transformers models give them. */
    static boolean isVocabularyName(String n) {
        return isInputEmbeddingName(n) || n.endsWith("embed_out.weight") || n.equals("lm_head.weight")
                || n.endsWith(".lm_head.weight");
    }

    /**
     * Checks that a 16-bit base checkpoint can stand in for a quantized one when merging into the original weights
     * (Unsloth's {@code merged_16bit}): the same logical tensor names and shapes, and no quantized tensors.
     */
    public static void checkBase16(Checkpoint quantized, Checkpoint base16) {
        Map<String, LogicalTensor> q = Internals.checkpoint().logical(quantized);
        Map<String, LogicalTensor> b = Internals.checkpoint().logical(base16);
        for (LogicalTensor t : b.values()) {
            if (t.kind() != QuantKind.PLAIN) {
                throw new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, base16.path(), t.name(), "is quantized (" + t.kind() + "); the 16-bit"
                        + " base must be the original, unquantized checkpoint");
            }
        }
        List<String> missing = new ArrayList<>();
        for (String n : q.keySet()) {
            if (!b.containsKey(n)) {
                missing.add(n);
            }
        }
        List<String> extra = new ArrayList<>();
        for (String n : b.keySet()) {
            if (!q.containsKey(n)) {
                extra.add(n);
            }
        }
        if (!missing.isEmpty() || !extra.isEmpty()) {
            StringBuilder sb = new StringBuilder("does not have the same tensors as ").append(quantized.path());
            if (!missing.isEmpty()) {
                sb.append("; missing ").append(missing.size()).append(": ").append(few(missing));
            }
            if (!extra.isEmpty()) {
                sb.append("; not in the quantized checkpoint ").append(extra.size()).append(": ").append(few(extra));
            }
            throw new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, base16.path(), sb.toString());
        }
        for (LogicalTensor t : q.values()) {
            LogicalTensor o = b.get(t.name());
            long[] qs = t.shape();
            long[] bs = o.shape();
            if (!Arrays.equals(qs, bs)) {
                boolean transposed = qs.length == 2 && bs.length == 2 && qs[0] == bs[1] && qs[1] == bs[0];
                throw new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, base16.path(), t.name(), "has shape " + Arrays.toString(bs)
                        + " but the quantized checkpoint has " + Arrays.toString(qs)
                        + (transposed ? " (a Conv1D weight stored [in, out]? such models are not supported with a"
                        + " 16-bit base)" : ""));
            }
            if (t.isFloat() && !o.isFloat()) {
                throw new Dequant4jException(Dequant4jException.Kind.ADAPTER_MISMATCH, base16.path(), t.name(), "has dtype " + o.dtype()
                        + " but the quantized checkpoint's tensor is a float tensor");
            }
        }
    }

    private static String few(List<String> names) {
        List<String> s = names.subList(0, Math.min(5, names.size()));
        return String.join(", ", s) + (names.size() > 5 ? ", ..." : "");
    }
}

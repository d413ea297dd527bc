package dev.dequant4j.internal.export;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.ExportResult;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.PlannedExport;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.OutputFormat;
import dev.dequant4j.ProgressListener;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TensorStats;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.cuda.CudaBackend;
import dev.dequant4j.internal.lora.AdapterJson;
import dev.dequant4j.internal.lora.MergeOp;
import dev.dequant4j.internal.lora.MergePlan;
import dev.dequant4j.internal.lora.MergeRunner;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.ShardIndex;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import dev.dequant4j.internal.safetensors.StagedReads;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The export pipeline: plan every output byte up front, then materialize units in parallel under a memory budget
 * and write them in file order into a temporary directory that is renamed into place only when complete.
 */
public final class Exporter {
    /** Model types whose linears are GPT-2 {@code Conv1D} ([in, out] weights; bnb quantizes them as [out, in]). */
    static final Set<String> CONV1D_MODEL_TYPES = Set.of("gpt2", "openai-gpt", "imagegpt", "decision_transformer");

    /** Files copied unchanged from the model directory (tokenizer, generation and chat-template files). */
    static final List<String> COPIED_GLOBS = List.of("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
            "special_tokens_map.json", "generation_config.json", "chat_template.*", "*.tiktoken", "vocab.*",
            "merges.txt", "added_tokens.json", "preprocessor_config.json");

    private static final System.Logger LOG = System.getLogger("dev.dequant4j");

    public static final long DEFAULT_MAX_SHARD_BYTES = 5_000_000_000L;
    public static final long DEFAULT_MEMORY_BUDGET = 512L << 20;
    static final long MAX_UNIT_BYTES = 16L << 20;
    static final long MIN_UNIT_BYTES = 1L << 20;

    /**
     * Everything an export needs.
     *
     * @param base16   the original 16-bit checkpoint to merge into instead of the dequantized base, or null
     * @param adapters LoRA adapters, merged in order
     * @param dtype    output dtype, or null for the model's own
     * @param channels opens output files (a seam for fault-injection tests)
     * @param ggufType the GGUF tensor types, or null for the dtype's (only with {@link OutputFormat#GGUF})
     */
    public record Request(Checkpoint base, Checkpoint base16, List<LoraAdapter> adapters, DType dtype,
                          Backend backend, long maxShardBytes, int threads,
                          long memoryBudget, ProgressListener progress, Path target, boolean overwrite,
                          boolean allowNonFinite, SequentialWriter.ChannelFactory channels,
                          TiedEmbeddings tiedEmbeddings, OutputFormat format, GgufFileType ggufType) {
        public Request(Checkpoint base, Checkpoint base16, List<LoraAdapter> adapters, DType dtype, Backend backend,
                       long maxShardBytes, int threads, long memoryBudget, ProgressListener progress, Path target,
                       boolean overwrite, boolean allowNonFinite, SequentialWriter.ChannelFactory channels,
                       TiedEmbeddings tiedEmbeddings) {
            this(base, base16, adapters, dtype, backend, maxShardBytes, threads, memoryBudget, progress, target,
                    overwrite, allowNonFinite, channels, tiedEmbeddings, OutputFormat.SAFETENSORS, null);
        }

        public Request(Checkpoint base, Checkpoint base16, List<LoraAdapter> adapters, DType dtype, Backend backend,
                       long maxShardBytes, int threads, long memoryBudget, ProgressListener progress, Path target,
                       boolean overwrite, boolean allowNonFinite, SequentialWriter.ChannelFactory channels) {
            this(base, base16, adapters, dtype, backend, maxShardBytes, threads, memoryBudget, progress, target,
                    overwrite, allowNonFinite, channels, TiedEmbeddings.AS_TRAINED);
        }
    }

    private Exporter() {}

    public static ExportResult run(Request r) {
        Prepared p = prepare(r);
        if (r.format() == OutputFormat.GGUF) {
            return GgufExport.run(r, ggufInputs(p));
        }
        return write(p);
    }

    private static GgufExport.Inputs ggufInputs(Prepared p) {
        Request r = p.request();
        Internals.CheckpointAccess acc = Internals.checkpoint();
        Checkpoint source = r.base16() != null ? r.base16() : r.base();
        Path configFile = acc.configFile(acc.config(source) != null ? source : r.base());
        return new GgufExport.Inputs(p.started(), p.plan().tensors(), p.mergePlan(), p.config(), configFile,
                p.dtype(), p.untie(), p.vocabulary(), p.copied());
    }

    /** Everything an export decides and checks before it writes a byte. */
    private record Prepared(Request request, long started, JsonObject config, Map<String, Path> copied,
                            long vocabulary, MergePlan mergePlan, BackendChoice backend, DType dtype, boolean untie,
                            int threads, long budget, int poolSize, long unitBytes, long maxShard, ExportPlan plan,
                            Path target) {}

    private static Prepared prepare(Request r) {
        long t0 = System.nanoTime();
        Internals.CheckpointAccess acc = Internals.checkpoint();
        Checkpoint source = r.base16() != null ? r.base16() : r.base();
        JsonObject config = acc.config(source) != null ? acc.config(source) : acc.config(r.base());
        if (config != null) {
            Checkpoint from = acc.config(source) != null ? source : r.base();
            checkCopiable(from.directory(), acc.configFile(from));
        }
        Map<String, Path> copied = chooseModelFiles(r.base().directory(),
                r.base16() != null ? r.base16().directory() : null);
        long vocabulary = -1;
        Map<String, LogicalTensor> sources = acc.logical(source);
        checkQuantMethod(acc.config(r.base()), acc.configFile(r.base()));
        if (r.base16() != null) {
            MergePlan.checkBase16(r.base(), r.base16());
        }
        MergePlan mergePlan = r.adapters().isEmpty() ? null : MergePlan.build(r.base(), r.adapters(), r.tiedEmbeddings());
        if (mergePlan != null && mergePlan.vocabularySize() >= 0) {
            vocabulary = mergePlan.vocabularySize();
            copied = withAdapterTokenizer(copied, r.adapters(), vocabulary);
        }
        Set<String> merged = mergePlan == null ? Set.of() : mergePlan.tensors();
        Map<String, Integer> steps = new HashMap<>();
        if (mergePlan != null) {
            for (MergePlan.Target t : mergePlan.targets()) {
                steps.merge(t.baseTensor(), 1, Integer::sum);
            }
        }
        BackendChoice backend = chooseBackend(r.backend());
        DType dtype = r.dtype() != null ? r.dtype() : defaultDtype(config, acc.logical(r.base()));
        if (!dtype.isOutputType()) {
            throw new IllegalArgumentException("output dtype must be F16, BF16 or F32, not " + dtype);
        }
        boolean tied = config != null && config.get("tie_word_embeddings") == JsonBoolean.TRUE;
        boolean conv1d = config != null && config.get("model_type") instanceof JsonString mt
                && CONV1D_MODEL_TYPES.contains(mt.value());
        Map<String, String> untied = mergePlan == null ? Map.of() : mergePlan.untied();
        boolean untie = tied && merged.contains("lm_head.weight") && sources.containsKey("lm_head.weight")
                || !untied.isEmpty();

        List<LogicalTensor> produced = new ArrayList<>(sources.values());
        List<String> names = new ArrayList<>(sources.keySet());
        untied.forEach((name, embedding) -> {
            produced.add(sources.get(embedding));
            names.add(name);
        });
        List<ExportPlan.OutputTensor> outs = new ArrayList<>();
        for (int ti = 0; ti < produced.size(); ti++) {
            LogicalTensor t = produced.get(ti);
            String name = names.get(ti);
            int mergeSteps = steps.getOrDefault(name, 0);
            if (tied && !untie && name.equals("lm_head.weight") && mergeSteps == 0) {
                continue;
            }
            boolean raw = t.kind() == QuantKind.PLAIN && !t.isFloat();
            if (raw && mergeSteps > 0) {
                throw new Dequant4jException(Kind.ADAPTER_MISMATCH, sourcePath(t), t.name(), "adapter targets a tensor of dtype "
                        + t.dtype() + ", which is not a float type");
            }
            boolean transpose = conv1d && t.kind() != QuantKind.PLAIN && t.shape().length == 2;
            long[] resized = mergePlan == null ? null : mergePlan.resizedShape(name);
            long[] shape = resized != null ? resized : t.shape();
            if (transpose) {
                if (resized != null) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, sourcePath(t), t.name(), "a quantized Conv1D weight cannot be"
                            + " resized by an adapter");
                }
                shape = new long[] {shape[1], shape[0]};
            }
            // The CUDA kernels produce the base's shape; a resized vocabulary matrix is produced on the CPU.
            boolean onDevice = backend.backend() == Backend.CUDA && !raw && !transpose && resized == null
                    && (t.kind() != QuantKind.PLAIN || mergeSteps > 0);
            outs.add(new ExportPlan.OutputTensor(name, t, mergeSteps, raw ? t.dtype() : dtype, shape, raw,
                    transpose, onDevice));
        }

        int threads = r.threads() > 0 ? r.threads() : Runtime.getRuntime().availableProcessors();
        long budget = r.memoryBudget() > 0 ? r.memoryBudget() : DEFAULT_MEMORY_BUDGET;
        int poolSize = 2 * threads + 2;
        long unitBytes = Math.clamp(budget / poolSize, MIN_UNIT_BYTES, MAX_UNIT_BYTES);
        long maxShard = r.maxShardBytes() > 0 ? r.maxShardBytes() : DEFAULT_MAX_SHARD_BYTES;
        ExportPlan plan = ExportPlan.build(outs, maxShard, unitBytes, lanes(threads));

        if (r.target().toString().isBlank()) {
            throw new IllegalArgumentException("the output path is empty");
        }
        Path target = r.target().toAbsolutePath().normalize();
        checkTarget(target, r, copied);
        checkFreeSpace(target, plan.totalFileBytes());
        return new Prepared(r, t0, config, copied, vocabulary, mergePlan, backend, dtype, untie, threads, budget,
                poolSize, unitBytes, maxShard, plan, target);
    }

    /** What {@link #run} would write, checked as it checks (the target too), with nothing written. */
    public static PlannedExport plan(Request r) {
        Prepared p = prepare(r);
        if (r.format() == OutputFormat.GGUF) {
            return GgufExport.plan(r, ggufInputs(p));
        }
        AtomicDirectory.checkTarget(p.target(), r.overwrite());
        List<ShardedLayout.Shard> layout = p.plan().layout().shards();
        Map<String, String> fileOf = new HashMap<>();
        List<PlannedExport.Shard> shards = new ArrayList<>();
        for (ShardedLayout.Shard s : layout) {
            s.placements().forEach(pl -> fileOf.put(pl.spec().name(), s.fileName()));
            shards.add(new PlannedExport.Shard(s.fileName(), s.fileSize(), s.placements().size()));
        }
        List<PlannedExport.Tensor> tensors = new ArrayList<>();
        for (ExportPlan.OutputTensor t : p.plan().tensors()) {
            tensors.add(new PlannedExport.Tensor(t.name(), t.sourceKind(), t.dtype(), t.shape(), t.mergeSteps(),
                    fileOf.get(t.name())));
        }
        return new PlannedExport(p.target(), p.dtype(), p.backend().backend(), p.backend().reason(), tensors, shards,
                p.plan().totalFileBytes(), merges(r, p.mergePlan()));
    }

    /** Every adapter module to merge, in merge order, for the plan. */
    static List<PlannedExport.Merge> merges(Request r, MergePlan mergePlan) {
        List<PlannedExport.Merge> merges = new ArrayList<>();
        if (mergePlan != null) {
            for (MergePlan.Target t : mergePlan.targets()) {
                merges.add(new PlannedExport.Merge(r.adapters().get(t.adapter()).directory(), t.module().module(),
                        t.baseTensor()));
            }
        }
        return merges;
    }

    private static ExportResult write(Prepared p) {
        Request r = p.request();
        long t0 = p.started();
        Internals.CheckpointAccess acc = Internals.checkpoint();
        JsonObject config = p.config();
        Map<String, Path> copied = p.copied();
        long vocabulary = p.vocabulary();
        MergePlan mergePlan = p.mergePlan();
        BackendChoice backend = p.backend();
        DType dtype = p.dtype();
        boolean untie = p.untie();
        int threads = p.threads();
        long budget = p.budget();
        int poolSize = p.poolSize();
        long unitBytes = p.unitBytes();
        long maxShard = p.maxShard();
        ExportPlan plan = p.plan();
        Path target = p.target();
        CpuKernels kernels = Kernels.get();
        int[] unitsPerTensor = new int[plan.tensors().size()];
        for (ExportPlan.Unit u : plan.units()) {
            unitsPerTensor[u.tensorIndex()]++;
        }
        List<TensorMerge> merges = new ArrayList<>();
        List<TensorTally> tallies = new ArrayList<>();
        for (int i = 0; i < plan.tensors().size(); i++) {
            ExportPlan.OutputTensor t = plan.tensors().get(i);
            tallies.add(new TensorTally());
            merges.add(t.mergeSteps() == 0 ? null : new TensorMerge(t, mergePlan, kernels, unitsPerTensor[i]));
        }

        ProgressListener progress = r.progress() != null ? r.progress() : ProgressListener.NONE;
        List<TensorStats> stats;
        List<Manifest.FileRecord> files = new ArrayList<>();
        try (CudaBackend cuda = backend.backend() == Backend.CUDA ? CudaBackend.open() : null;
             AtomicDirectory out = AtomicDirectory.create(target, r.overwrite())) {
            progress.onStart(plan.tensors().size(), plan.totalFileBytes());
            prepass(plan, merges);
            String[] shas = execute(plan, merges, tallies, kernels, cuda, threads, poolSize, unitBytes, out.dir(), r,
                    progress, () -> new CpuMaterializer(kernels)::produce);
            stats = new ArrayList<>();
            for (int i = 0; i < plan.tensors().size(); i++) {
                ExportPlan.OutputTensor t = plan.tensors().get(i);
                TensorTally tally = tallies.get(i);
                // The CUDA backend returns only the rounded output, so device-merged tensors have no change figures.
                boolean measured = t.mergeSteps() == 0 || !t.onDevice();
                stats.add(new TensorStats(t.name(), t.sourceKind(), t.dtype(), t.shape(), t.mergeSteps(),
                        measured ? tally.maxAbsDelta() : Double.NaN, measured ? tally.relDeltaNorm() : Double.NaN));
            }
            List<ShardedLayout.Shard> shards = plan.layout().shards();
            for (int i = 0; i < shards.size(); i++) {
                files.add(new Manifest.FileRecord(shards.get(i).fileName(), shards.get(i).fileSize(), shas[i]));
            }
            SequentialWriter.ChannelFactory channels = r.channels() != null ? r.channels()
                    : SequentialWriter.DEFAULT_CHANNELS;
            byte[] index = plan.layout().indexJson();
            if (index != null) {
                files.add(writeSmall(channels, out.dir(), ShardIndex.FILE_NAME, index));
            }
            if (config != null) {
                files.add(writeSmall(channels, out.dir(), "config.json", ConfigRewriter.rewrite(config, dtype,
                        untie, vocabulary)));
            }
            files.addAll(copyModelFiles(copied, out.dir(), channels));
            JsonValue base16 = r.base16() == null ? JsonNull.NULL : sourceRecord(r.base16(), acc);
            JsonObject manifest = Manifest.build(tool(), sourceRecord(r.base(), acc), base16,
                    adapterRecords(r.adapters(), mergePlan), options(r, dtype, threads, budget, maxShard,
                            backend.reason()), files, stats);
            publish(channels, out, manifest, progress, target);
        }
        ExportResult result = new ExportResult(target, dtype, plan.tensors().size(), plan.totalFileBytes(),
                outputPaths(target, files),
                Duration.ofNanos(System.nanoTime() - t0), backend.backend(), backend.reason(), stats);
        progress.onDone(result);
        return result;
    }

    /**
     * Shards written and hashed at once: one per four workers, and at least two with two workers or more. A lane's
     * SHA-256 takes a core at about 1.4 GB/s, about what three to four workers produce, so a lane per four workers
     * keeps hashing off the critical path. With one lane a model's first shard starts with its embedding and output
     * matrices, 2 GB of plain tensors that only need converting: the disk is then the limit and the cores wait,
     * and then the layers keep the cores busy while the disk waits. A second lane interleaves the next shard's
     * layers with them (docs/BENCHMARKS.md: 4 % faster cold, 5 % warm on two cores).
     */
    static int lanes(int threads) {
        return threads == 1 ? 1 : Math.max(2, threads / 4);
    }

    /** The backend an export uses and why. */
    record BackendChoice(Backend backend, String reason) {}

    static BackendChoice chooseBackend(Backend requested) {
        Backend b = requested == null ? Backend.AUTO : requested;
        if (b == Backend.CPU) {
            return new BackendChoice(Backend.CPU, "cpu (requested; " + Kernels.describe() + ")");
        }
        CudaBackend.Availability a = CudaBackend.probe();
        if (a.usable()) {
            return new BackendChoice(Backend.CUDA, "cuda (" + a.device() + ")");
        }
        if (b == Backend.CUDA) {
            throw new Dequant4jException(Kind.BACKEND, "Backend.CUDA is not usable: " + a.reason());
        }
        return new BackendChoice(Backend.CPU, "cpu (" + a.reason() + "; " + Kernels.describe() + ")");
    }

    /** The model's dtype from config.json, else the quant states' dtype, else the first float plain tensor's. */
    static DType defaultDtype(JsonObject config, Map<String, LogicalTensor> tensors) {
        return ConfigRewriter.modelDtype(config).orElseGet(() -> {
            for (LogicalTensor t : tensors.values()) {
                if (t instanceof FourBitTensor f) {
                    return f.dtype();
                }
            }
            for (LogicalTensor t : tensors.values()) {
                if (t.kind() == QuantKind.PLAIN && t.dtype().isOutputType()) {
                    return t.dtype();
                }
            }
            return DType.F16;
        });
    }

    /**
     * A checkpoint quantized by another method (GPTQ, AWQ, FP8, ...) stores its weights in tensors that look plain;
     * exporting them as they are would write a broken model, so it is refused.
     */
    static void checkQuantMethod(JsonObject config, Path configFile) {
        if (config == null || !(config.get("quantization_config") instanceof JsonObject q)) {
            return;
        }
        if (q.get("quant_method") instanceof JsonString m && !m.value().equals("bitsandbytes")) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, configFile, "quantization_config.quant_method is '" + m.value()
                    + "'; dequant4j dequantizes bitsandbytes checkpoints only");
        }
    }

    static Path sourcePath(LogicalTensor t) {
        return switch (t) {
            case PlainTensor p -> p.ref().path();
            case FourBitTensor f -> f.weight().path();
            case dev.dequant4j.internal.bnb.Int8Tensor i -> i.weight().path();
        };
    }

    /** The target must not be, or contain, any input: replacing it would delete what we read. */
    static void checkTarget(Path target, Request r, Map<String, Path> copied) {
        List<Path> dirs = new ArrayList<>();
        List<Path> files = new ArrayList<>(copied.values());
        for (Checkpoint c : r.base16() == null ? List.of(r.base()) : List.of(r.base(), r.base16())) {
            dirs.add(c.directory());
            files.addAll(c.files());
            Path cfg = Internals.checkpoint().configFile(c);
            if (cfg != null) {
                files.add(cfg);
            }
            if (InputFiles.present(c.directory().resolve(ShardIndex.FILE_NAME))) {
                files.add(c.directory().resolve(ShardIndex.FILE_NAME));
            }
        }
        for (LoraAdapter a : r.adapters()) {
            dirs.add(a.directory());
            files.add(a.directory().resolve("adapter_config.json"));
            files.add(a.directory().resolve("adapter_model.safetensors"));
        }
        OutputPlacement.check(target, dirs, files);
    }

    static void checkFreeSpace(Path target, long bytes) {
        Path parent = target.getParent();
        while (parent != null && !Files.exists(parent)) {
            parent = parent.getParent();
        }
        if (parent == null) {
            return;
        }
        try {
            long usable = Files.getFileStore(parent).getUsableSpace();
            long need = bytes + (16L << 20);
            if (usable < need) {
                throw new Dequant4jException(Kind.IO, target, "not enough free space: the export needs " + need
                        + " bytes, " + parent + " has " + usable + " usable");
            }
        } catch (IOException e) {
            // The file store cannot tell its free space; a full disk still fails cleanly while writing.
        }
    }

    /**
     * A tensor's merge runner, built from the adapters' payloads when its first unit is produced and dropped when
     * its last one is, so the payloads of only the tensors in flight are in memory.
     */
    static final class TensorMerge {
        private final ExportPlan.OutputTensor tensor;
        private final MergePlan plan;
        private final CpuKernels kernels;
        private final AtomicInteger unitsLeft;
        private List<MergeOp> ops;
        private MergeRunner runner;

        TensorMerge(ExportPlan.OutputTensor tensor, MergePlan plan, CpuKernels kernels, int units) {
            this.tensor = tensor;
            this.plan = plan;
            this.kernels = kernels;
            this.unitsLeft = new AtomicInteger(units);
        }

        synchronized List<MergeOp> ops() {
            if (ops == null) {
                ops = plan.ops(tensor.name());
            }
            return ops;
        }

        synchronized MergeRunner runner() {
            if (runner == null) {
                long rows = tensor.mergeRows();
                long cols = tensor.mergeCols();
                if (cols > Integer.MAX_VALUE / 2) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, sourcePath(tensor.source()), tensor.name(), "rows of " + cols
                            + " elements are too long to merge");
                }
                try {
                    runner = new MergeRunner(ops(), rows, (int) cols, kernels);
                } catch (IllegalArgumentException e) {
                    throw new Dequant4jException(Kind.ADAPTER_MISMATCH, sourcePath(tensor.source()), tensor.name(),
                            "merge step does not fit the " + rows + " x " + cols + " tensor: " + e.getMessage());
                }
            }
            return runner;
        }

        void unitDone() {
            if (unitsLeft.decrementAndGet() == 0) {
                synchronized (this) {
                    runner = null;
                    ops = null;
                }
            }
        }
    }

    /** Computes the column norms that per-column DoRA steps need, before any unit is produced. */
    static void prepass(ExportPlan plan, List<TensorMerge> merges) {
        for (int i = 0; i < merges.size(); i++) {
            if (merges.get(i) == null || plan.tensors().get(i).onDevice()) {
                continue;
            }
            MergeRunner runner = merges.get(i).runner();
            if (!runner.needsPrepass()) {
                continue;
            }
            ExportPlan.OutputTensor t = plan.tensors().get(i);
            long cols = Math.max(1, t.mergeCols());
            int chunkRows = (int) Math.max(1, CpuMaterializer.SUB / cols);
            runner.prepass((row0, rows, w) -> t.readBase(row0 * cols, w, 0, (int) (rows * cols)), chunkRows);
        }
    }

    /** Makes one unit's output bytes on the CPU; one per worker thread (it may own scratch arrays). */
    interface Producer {
        void produce(ExportPlan.OutputTensor t, ExportPlan.Unit u, MergeRunner runner, TensorTally tally,
                     MemorySegment buf);
    }

    /** Runs the workers and the writer; returns the SHA-256 of every shard. */
    static String[] execute(ExportPlan plan, List<TensorMerge> merges, List<TensorTally> tallies,
                                    CpuKernels kernels, CudaBackend cuda, int threads, int poolSize, long unitBytes,
                                    Path dir, Request r, ProgressListener progress,
                                    java.util.function.Supplier<Producer> producers) {
        AtomicReference<Throwable> failure = new AtomicReference<>();
        AtomicInteger tensorsDone = new AtomicInteger();
        OrderedWriter writer = new OrderedWriter(dir, plan, r.channels() != null ? r.channels()
                : SequentialWriter.DEFAULT_CHANNELS, SequentialWriter.directByDefault(), (u, done) -> {
                    if (u.lastOfTensor()) {
                        progress.onTensor(plan.tensors().get(u.tensorIndex()).name(), tensorsDone.incrementAndGet(),
                                done);
                    } else {
                        progress.onBytes(done);
                    }
                });
        try (Arena arena = Arena.ofShared();
             ReadAhead readAhead = new ReadAhead(plan, ReadAhead.window(r.memoryBudget() > 0 ? r.memoryBudget()
                     : DEFAULT_MEMORY_BUDGET, poolSize * unitBytes))) {
            BlockingQueue<MemorySegment> pool = new ArrayBlockingQueue<>(poolSize);
            // No larger than the largest unit: a small model needs no buffers of the budget's full unit size.
            long largest = 1;
            for (ExportPlan.Unit u : plan.units()) {
                largest = Math.max(largest, u.byteSize());
            }
            for (int i = 0; i < poolSize; i++) {
                pool.add(arena.allocate(Math.min(unitBytes, largest), 4096));
            }
            AtomicInteger next = new AtomicInteger();
            List<Thread> workers = new ArrayList<>();
            // Whichever thread fails first stops all of them: the writer and hasher return, and the workers are
            // interrupted, since one may wait in pool.take() for a buffer that the stopped consumers never return.
            java.util.function.Consumer<Throwable> cancel = e -> {
                failure.compareAndSet(null, e);
                writer.abort();
                for (Thread w : workers) {
                    if (w != Thread.currentThread()) {
                        w.interrupt();
                    }
                }
            };
            for (int w = 0; w < threads; w++) {
                Thread th = Thread.ofPlatform().name("dequant4j-worker-" + w).unstarted(() -> {
                    Producer m = producers.get();
                    try {
                        while (failure.get() == null) {
                            MemorySegment buf = pool.take();
                            int seq = next.getAndIncrement();
                            if (seq >= plan.dispatch().size()) {
                                pool.add(buf);
                                return;
                            }
                            readAhead.taken(seq);
                            List<StagedReads.Piece> staged = readAhead.awaitRead(seq);
                            if (progress.isCancelled()) {
                                pool.add(buf);
                                throw new Dequant4jException(Kind.CANCELLED, r.target(), "export cancelled");
                            }
                            ExportPlan.Unit u = plan.dispatch().get(seq);
                            ExportPlan.OutputTensor t = plan.tensors().get(u.tensorIndex());
                            MemorySegment target = buf;
                            Arena big = null;
                            if (u.byteSize() > buf.byteSize()) {
                                big = Arena.ofShared();
                                target = big.allocate(u.byteSize(), 4096);
                            }
                            Arena bigArena = big;
                            Runnable release = () -> {
                                if (bigArena != null) {
                                    bigArena.close();
                                }
                                pool.add(buf);
                            };
                            try {
                                StagedReads.set(staged);
                                OrderedWriter.beforeUnit("worker");
                                TensorTally tally = tallies.get(u.tensorIndex());
                                TensorMerge merge = merges.get(u.tensorIndex());
                                if (t.onDevice()) {
                                    MemorySegment out = target.asSlice(0, u.byteSize());
                                    cuda.materialize(t.source(), merge == null ? List.of() : merge.ops(), t.dtype(),
                                            out);
                                    CpuMaterializer.countNonFinite(t, 0, out, t.numel(), tally);
                                } else {
                                    m.produce(t, u, merge == null ? null : merge.runner(), tally, target);
                                }
                                readAhead.done(seq);
                                if (merge != null) {
                                    merge.unitDone();
                                }
                                if (!r.allowNonFinite() && tally.nonFinite() > 0) {
                                    throw nonFinite(t, tally);
                                }
                            } catch (RuntimeException | Error e) {
                                release.run();
                                throw e;
                            } finally {
                                StagedReads.clear();
                            }
                            writer.submit(u, target, release);
                        }
                    } catch (Throwable e) {
                        cancel.accept(e);
                    }
                });
                workers.add(th);
            }
            List<Thread> consumers = new ArrayList<>();
            for (int lane = 0; lane < plan.lanes(); lane++) {
                int l = lane;
                consumers.add(Thread.ofPlatform().name("dequant4j-writer-" + l).unstarted(() -> {
                    try {
                        writer.run(l);
                    } catch (Throwable e) {
                        cancel.accept(e);
                    }
                }));
                consumers.add(Thread.ofPlatform().name("dequant4j-hasher-" + l).unstarted(() -> {
                    try {
                        writer.hash(l);
                    } catch (Throwable e) {
                        cancel.accept(e);
                    }
                }));
            }
            readAhead.start();
            workers.forEach(Thread::start);
            consumers.forEach(Thread::start);
            try {
                for (Thread w : workers) {
                    w.join();
                }
                if (failure.get() != null) {
                    writer.abort();
                }
                for (Thread c : consumers) {
                    c.join();
                }
            } catch (InterruptedException e) {
                cancel.accept(e);
                Thread.currentThread().interrupt();
                joinQuietly(workers, consumers);
            }
            writer.releaseAll();
        }
        Throwable f = failure.get();
        if (f != null) {
            if (f instanceof Dequant4jException d) {
                throw d;
            }
            if (f instanceof InterruptedException) {
                throw new Dequant4jException(Kind.CANCELLED, r.target(), "export interrupted", f);
            }
            throw new Dequant4jException(Kind.IO, r.target(), "export failed: " + f, f);
        }
        String[] shas = new String[plan.layout().shards().size()];
        for (int i = 0; i < shas.length; i++) {
            shas[i] = writer.sha256(i);
        }
        return shas;
    }

    private static void joinQuietly(List<Thread> workers, List<Thread> others) {
        try {
            for (Thread w : workers) {
                w.join(10_000);
            }
            for (Thread o : others) {
                o.join(10_000);
            }
        } catch (InterruptedException ignored) {
            // already shutting down
        }
    }

    private static Dequant4jException nonFinite(ExportPlan.OutputTensor t, TensorTally tally) {
        String what = t.mergeSteps() == 0 ? "" : " after merging";
        return new Dequant4jException(Kind.NON_FINITE, sourcePath(t.source()), t.name(), tally.nonFinite() + " non-finite value(s)"
                + what + " in " + t.dtype() + " (NaN, infinity or beyond the dtype's range; first at element "
                + tally.firstNonFinite() + "); use Export.allowNonFinite(true) to write them anyway");
    }

    /**
     * The last steps of every export, whatever its format: the manifest written beside the files, a cancel honoured
     * up to the last moment, then the directory published.
     */
    static void publish(SequentialWriter.ChannelFactory channels, AtomicDirectory out, JsonObject manifest,
                        ProgressListener progress, Path target) {
        writeSmall(channels, out.dir(), Manifest.FILE_NAME,
                (Json.write(manifest, Json.Style.PYTHON_INDENT2) + "\n").getBytes(StandardCharsets.UTF_8));
        if (progress.isCancelled()) {
            throw new Dequant4jException(Kind.CANCELLED, target, "export cancelled");
        }
        out.commit();
    }

    /** The published files under {@code target}, the manifest last. */
    static List<Path> outputPaths(Path target, List<Manifest.FileRecord> files) {
        List<Path> paths = new ArrayList<>();
        for (Manifest.FileRecord f : files) {
            paths.add(target.resolve(f.name()));
        }
        paths.add(target.resolve(Manifest.FILE_NAME));
        return paths;
    }

    static Manifest.FileRecord writeSmall(SequentialWriter.ChannelFactory channels, Path dir, String name,
                                                  byte[] bytes) {
        Path p = dir.resolve(name);
        try (java.nio.channels.FileChannel ch = channels.open(p, NEW_FILE)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                ch.write(b);
            }
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, p, "write failed: " + e.getMessage(), e);
        }
        java.security.MessageDigest md = Manifest.sha();
        return new Manifest.FileRecord(name, bytes.length, java.util.HexFormat.of().formatHex(md.digest(bytes)));
    }

    /**
     * A file whose content goes into the output (config.json, tokenizer files) must be in the model directory: a
     * link out of it (say, tokenizer.model to ~/.ssh/id_rsa, in a cloned repository) would copy that file into a
     * model the user may publish. The hub cache's links into its blobs are its normal layout.
     */
    private static void checkCopiable(Path dir, Path file) {
        InputFiles.check(dir, file);
    }

    private static final Set<java.nio.file.OpenOption> NEW_FILE = Set.of(java.nio.file.StandardOpenOption.CREATE_NEW,
            java.nio.file.StandardOpenOption.WRITE);

    /**
     * The tokenizer, generation and chat-template files to copy, by name (from the model dir, else from the 16-bit
     * base's), chosen and checked before anything is written.
     */
    private static Map<String, Path> chooseModelFiles(Path modelDir, Path base16Dir) {
        Map<String, Path> chosen = new LinkedHashMap<>();
        for (Path dir : new Path[] {modelDir, base16Dir}) {
            if (dir == null || !Files.isDirectory(dir)) {
                continue;
            }
            addMatching(dir, COPIED_GLOBS, chosen, false);
        }
        return chosen;
    }

    /**
     * Adds the regular files of {@code dir} that match {@code globs} to {@code into} by name, each checked with
     * {@link #checkCopiable}; a name already there is kept unless {@code replace}.
     */
    private static void addMatching(Path dir, List<String> globs, Map<String, Path> into, boolean replace) {
        for (String glob : globs) {
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, glob)) {
                for (Path p : ds) {
                    String name = p.getFileName().toString();
                    if (replace || !into.containsKey(name)) {
                        checkCopiable(dir, p);
                        into.put(name, p);
                    }
                }
            } catch (IOException e) {
                throw new Dequant4jException(Kind.IO, dir, "cannot list: " + e.getMessage(), e);
            }
        }
    }

    /** The tokenizer's files among {@link #COPIED_GLOBS}. */
    static final List<String> TOKENIZER_GLOBS = List.of("tokenizer.json", "tokenizer_config.json",
            "tokenizer.model", "special_tokens_map.json", "chat_template.*", "*.tiktoken", "vocab.*", "merges.txt",
            "added_tokens.json");

    /**
     * A fine-tune that grew the vocabulary saves its tokenizer with the adapter (PEFT and Unsloth do), and the base's
     * tokenizer does not know the new tokens: the tokenizer files then all come from the last adapter directory that
     * has {@code tokenizer.json}, {@code tokenizer_config.json} or {@code tokenizer.model}, instead of the base's.
     */
    private static Map<String, Path> withAdapterTokenizer(Map<String, Path> chosen, List<LoraAdapter> adapters,
                                                          long vocabulary) {
        for (int i = adapters.size() - 1; i >= 0; i--) {
            Path dir = adapters.get(i).directory();
            if (!InputFiles.present(dir.resolve("tokenizer.json"))
                    && !InputFiles.present(dir.resolve("tokenizer_config.json"))
                    && !InputFiles.present(dir.resolve("tokenizer.model"))) {
                continue;
            }
            Map<String, Path> out = new LinkedHashMap<>();
            chosen.forEach((name, p) -> {
                if (!isTokenizerFile(name)) {
                    out.put(name, p);
                }
            });
            addMatching(dir, TOKENIZER_GLOBS, out, true);
            return out;
        }
        LOG.log(System.Logger.Level.WARNING, "the adapters resize the vocabulary to " + vocabulary + " rows, but"
                + " no adapter directory has tokenizer files: the base model's tokenizer is copied, and it does not"
                + " know the added tokens");
        return chosen;
    }

    private static boolean isTokenizerFile(String name) {
        Path p = Path.of(name);
        for (String glob : TOKENIZER_GLOBS) {
            if (p.getFileSystem().getPathMatcher("glob:" + glob).matches(p)) {
                return true;
            }
        }
        return false;
    }

    private static List<Manifest.FileRecord> copyModelFiles(Map<String, Path> chosen, Path out,
                                                            SequentialWriter.ChannelFactory channels) {
        List<Manifest.FileRecord> records = new ArrayList<>();
        for (Map.Entry<String, Path> e : chosen.entrySet()) {
            Path dst = out.resolve(e.getKey());
            try (java.nio.channels.FileChannel in = java.nio.channels.FileChannel.open(e.getValue());
                 java.nio.channels.FileChannel copy = channels.open(dst, NEW_FILE)) {
                for (long pos = 0, size = in.size(); pos < size; ) {
                    long n = in.transferTo(pos, size - pos, copy);
                    if (n <= 0) {
                        throw new IOException("the file shrank while being copied");
                    }
                    pos += n;
                }
            } catch (IOException ex) {
                throw new Dequant4jException(Kind.IO, dst, "cannot copy " + e.getValue() + ": " + ex.getMessage(), ex);
            }
            try {
                records.add(new Manifest.FileRecord(e.getKey(), Files.size(dst), Manifest.sha256(dst)));
            } catch (IOException ex) {
                throw new Dequant4jException(Kind.IO, dst, "cannot read back the copy: " + ex.getMessage(), ex);
            }
        }
        return records;
    }

    static JsonObject tool() {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("name", new JsonString("dequant4j"));
        String v = Exporter.class.getPackage().getImplementationVersion();
        m.put("version", new JsonString(v != null ? v : "development"));
        m.put("java", new JsonString(Runtime.version().toString()));
        m.put("cpu_kernels", new JsonString(Kernels.get().name()));
        m.put("created", new JsonString(Instant.now().toString()));
        return new JsonObject(m);
    }

    static JsonObject sourceRecord(Checkpoint c, Internals.CheckpointAccess acc) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("path", new JsonString(c.path().toAbsolutePath().normalize().toString()));
        List<JsonValue> files = new ArrayList<>();
        for (SafetensorsFile f : acc.store(c).files()) {
            Map<String, JsonValue> fm = new LinkedHashMap<>();
            fm.put("name", new JsonString(f.path().getFileName().toString()));
            fm.put("size", JsonNumber.of(f.fileSize()));
            fm.put("header_sha256", new JsonString(Manifest.headerSha256(f)));
            files.add(new JsonObject(fm));
        }
        m.put("files", new dev.dequant4j.internal.json.JsonArray(files));
        Path cfg = acc.configFile(c);
        try {
            m.put("config_sha256", cfg == null ? JsonNull.NULL : new JsonString(Manifest.sha256(cfg)));
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, cfg, "cannot read: " + e.getMessage(), e);
        }
        return new JsonObject(m);
    }

    static List<JsonValue> adapterRecords(List<LoraAdapter> adapters, MergePlan plan) {
        List<JsonValue> out = new ArrayList<>();
        for (int i = 0; i < adapters.size(); i++) {
            LoraAdapter a = adapters.get(i);
            Map<String, JsonValue> m = new LinkedHashMap<>();
            m.put("path", new JsonString(a.directory().toAbsolutePath().normalize().toString()));
            m.put("name", new JsonString(a.name()));
            m.put("r", JsonNumber.of(a.r()));
            m.put("lora_alpha", JsonNumber.of(a.alpha()));
            m.put("scaling", JsonNumber.of(a.scaling()));
            m.put("use_rslora", JsonBoolean.of(a.useRslora()));
            m.put("use_dora", JsonBoolean.of(a.useDora()));
            try {
                m.put("config_sha256", new JsonString(Manifest.sha256(a.directory().resolve("adapter_config.json"))));
                m.put("weights_header_sha256", new JsonString(Manifest.headerSha256(
                        a.directory().resolve("adapter_model.safetensors"))));
            } catch (IOException e) {
                throw new Dequant4jException(Kind.IO, a.directory(), "cannot read: " + e.getMessage(), e);
            }
            List<JsonValue> modules = new ArrayList<>();
            for (MergePlan.Target t : plan.targets()) {
                if (t.adapter() != i) {
                    continue;
                }
                modules.add(AdapterJson.module(t.module(), t.baseTensor()));
            }
            m.put("modules", new dev.dequant4j.internal.json.JsonArray(modules));
            out.add(new JsonObject(m));
        }
        return out;
    }

    static JsonObject options(Request r, DType dtype, int threads, long budget, long maxShard,
                                      String backendReason) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("dtype", new JsonString(dtype.name()));
        m.put("backend", new JsonString(backendReason));
        m.put("max_shard_bytes", JsonNumber.of(maxShard));
        m.put("threads", JsonNumber.of(threads));
        m.put("memory_budget", JsonNumber.of(budget));
        m.put("merge_base", new JsonString(r.base16() != null ? "base16" : "dequantized"));
        m.put("allow_non_finite", JsonBoolean.of(r.allowNonFinite()));
        return new JsonObject(m);
    }
}

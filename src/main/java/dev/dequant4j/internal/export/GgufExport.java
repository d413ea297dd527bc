package dev.dequant4j.internal.export;

import dev.dequant4j.Backend;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.ExportResult;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.OutputFormat;
import dev.dequant4j.PlannedExport;
import dev.dequant4j.ProgressListener;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.gguf.GgmlType;
import dev.dequant4j.internal.gguf.GgmlQuantize;
import dev.dequant4j.internal.gguf.GgufMetadata;
import dev.dequant4j.internal.gguf.GgufModel;
import dev.dequant4j.internal.gguf.GgufTokenizer;
import dev.dequant4j.internal.gguf.GgufType;
import dev.dequant4j.internal.gguf.GgufWriter;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.lora.MergePlan;
import dev.dequant4j.internal.lora.MergeRunner;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code export --format gguf}: the tensors our safetensors export would write, named, ordered, permuted and typed
 * as llama.cpp's converter does ({@link GgufModel}), written as one {@code model.gguf} through the same pipeline
 * (workers under the memory budget, the ordered writer, hashing on the way, a temporary directory renamed into
 * place). The GGUF header is computed first: every type and shape is known before any data moves.
 */
final class GgufExport {
    static final String FILE_NAME = "model.gguf";

    private static final ValueLayout.OfShort SHORT_LE =
            ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat FLOAT_LE =
            ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** What {@link Exporter#run} resolved before the format decides how to write. */
    record Inputs(long t0, List<ExportPlan.OutputTensor> outs, MergePlan mergePlan, JsonObject config,
                  Path configFile, DType dtype, boolean untie, long vocabulary, Map<String, Path> modelFiles) {}

    /** One GGUF tensor's place in the plan: its type, permutation and file offset. */
    private record Slot(GgufModel.Tensor gguf, long rowBytes, long rows, long dataOffset, int padding, int shard) {}

    /** One output file: its name, layout and how many of the tensors (in order) it holds. */
    private record Split(String fileName, GgufWriter layout, int count) {}

    /**
     * gguf-py's split ({@code convert_hf_to_gguf.py --split-max-size}): a new file starts when the current one holds
     * a tensor and its tensor bytes (unpadded) plus the next tensor's would exceed {@code maxBytes}; with more than
     * one file, the first gets all metadata and every file {@code split.no}, {@code split.count} and
     * {@code split.tensors.count} at the end, named {@code model-00001-of-0000N.gguf}. {@code maxBytes} 0: one file.
     */
    private static List<Split> split(GgufMetadata md, List<GgufWriter.Planned> tensors, long maxBytes) {
        List<List<GgufWriter.Planned>> groups = new ArrayList<>();
        groups.add(new ArrayList<>());
        long size = 0;
        for (GgufWriter.Planned t : tensors) {
            List<GgufWriter.Planned> current = groups.getLast();
            if (maxBytes > 0 && !current.isEmpty() && size + t.byteSize() > maxBytes) {
                groups.add(new ArrayList<>());
                size = 0;
            }
            groups.getLast().add(t);
            size += t.byteSize();
        }
        if (groups.size() == 1) {
            return List.of(new Split(FILE_NAME, new GgufWriter(md, tensors), tensors.size()));
        }
        List<Split> out = new ArrayList<>();
        for (int i = 0; i < groups.size(); i++) {
            GgufMetadata m = new GgufMetadata();
            if (i == 0) {
                md.entries().forEach(m::put);
            }
            m.put("split.no", new GgufMetadata.Value(GgufType.UINT16, null, i));
            m.put("split.count", new GgufMetadata.Value(GgufType.UINT16, null, groups.size()));
            m.putInt32("split.tensors.count", tensors.size());
            out.add(new Split(String.format("model-%05d-of-%05d.gguf", i + 1, groups.size()),
                    new GgufWriter(m, groups.get(i)), groups.get(i).size()));
        }
        return out;
    }

    private GgufExport() {}

    /**
     * Everything the export decides and checks before it writes a byte: the types, the GGUF header of every file,
     * each tensor's place and the units that fill it. The dry run reports it; the export writes it.
     */
    private record Layout(GgufFileType type, GgufModel model, List<Split> splits, List<ExportPlan.OutputTensor> tensors,
                          List<Slot> slots, ExportPlan plan, Path target, int threads, long budget, int poolSize,
                          long unitBytes) {}

    private static Layout layout(Exporter.Request r, Inputs in) {
        GgufFileType type = fileType(r, in.dtype());
        if (in.config() == null) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, r.base().directory(), "no config.json: a GGUF"
                    + " export needs the model's architecture and hyperparameters");
        }
        if (r.backend() == Backend.CUDA) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, "the GGUF export runs on the CPU; Backend.CUDA is"
                    + " not supported for it yet");
        }
        JsonObject config = Json.parseObject(ConfigRewriter.rewrite(in.config(), in.dtype(), in.untie(),
                in.vocabulary()));
        // The converter's order comes from the files of the safetensors export it reads: ours, in the float type of
        // the GGUF type (F32 for the quantized ones), with the default 5 GB shards.
        DType readDtype = type == GgufFileType.F16 ? DType.F16 : type == GgufFileType.BF16 ? DType.BF16 : DType.F32;
        List<ShardedLayout.Spec> specs = new ArrayList<>();
        for (ExportPlan.OutputTensor t : in.outs()) {
            if (t.raw()) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, Exporter.sourcePath(t.source()), t.name(),
                        "tensor of dtype " + t.dtype() + " cannot be exported as GGUF (not a float type)");
            }
            specs.add(new ShardedLayout.Spec(t.name(), readDtype, t.shape()));
        }
        ShardedLayout read = ShardedLayout.plan(specs, Exporter.DEFAULT_MAX_SHARD_BYTES, ExportPlan.DATA_ALIGNMENT);
        List<GgufModel.Source> sources = new ArrayList<>();
        for (ExportPlan.OutputTensor t : in.outs()) {
            sources.add(new GgufModel.Source(t.name(), t.shape(), Exporter.sourcePath(t.source()),
                    read.placement(t.name()).shard()));
        }
        Path modelDir = r.base().directory().toAbsolutePath().normalize();
        GgufModel model = GgufModel.of(config, in.configFile(), sources, type,
                modelDir.getFileName() == null ? "model" : modelDir.getFileName().toString());
        if (!in.modelFiles().containsKey("tokenizer.json") && !in.modelFiles().containsKey("tokenizer.model")) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, r.base().directory(), "no tokenizer.json or"
                    + " tokenizer.model: a GGUF file holds the vocabulary, so a GGUF export needs the tokenizer");
        }
        // the converter reads hparams with text_config moved to the root
        JsonObject hp = config.has("vocab_size") || !(config.get("text_config") instanceof JsonObject text)
                ? config : text;
        if (!(hp.get("vocab_size") instanceof dev.dequant4j.internal.json.JsonNumber n) || !n.isLong()) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, in.configFile(), "config.json has no integer"
                    + " vocab_size; a GGUF export needs it");
        }
        long vocab = n.longValue();
        GgufTokenizer tokenizer = GgufTokenizer.read(in.modelFiles(), model.architecture(), vocab, config);
        checkEmbeddingRows(model, tokenizer, in.modelFiles(), r.base().directory());
        tokenizer.writeTo(model.metadata());

        List<GgufWriter.Planned> planned = new ArrayList<>();
        for (GgufModel.Tensor t : model.tensors()) {
            if (t.ne().length > 2) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, sources.get(t.source()).file(),
                        sources.get(t.source()).name(), "tensors of more than two dimensions cannot be exported as"
                        + " GGUF yet");
            }
            planned.add(new GgufWriter.Planned(t.name(), t.ne(), t.type()));
        }
        List<Split> splits = split(model.written(), planned, r.maxShardBytes());

        int threads = r.threads() > 0 ? r.threads() : Runtime.getRuntime().availableProcessors();
        long budget = r.memoryBudget() > 0 ? r.memoryBudget() : Exporter.DEFAULT_MEMORY_BUDGET;
        int poolSize = 2 * threads + 2;
        long unitBytes = Math.clamp(budget / poolSize, Exporter.MIN_UNIT_BYTES, Exporter.MAX_UNIT_BYTES);
        List<ExportPlan.OutputTensor> tensors = new ArrayList<>();
        List<Slot> slots = new ArrayList<>();
        List<ExportPlan.Unit> units = new ArrayList<>();
        List<ShardedLayout.Shard> files0 = new ArrayList<>();
        int[] shardOf = new int[model.tensors().size()];
        int[] indexInShard = new int[model.tensors().size()];
        for (int sh = 0, i = 0; sh < splits.size(); sh++) {
            Split sp = splits.get(sh);
            files0.add(new ShardedLayout.Shard(sp.fileName(), headerBytes(sp.layout()), sp.layout().fileSize(),
                    List.of()));
            for (int k = 0; k < sp.count(); k++, i++) {
                shardOf[i] = sh;
                indexInShard[i] = k;
            }
        }
        for (int i = 0; i < model.tensors().size(); i++) {
            GgufModel.Tensor g = model.tensors().get(i);
            GgufWriter layout = splits.get(shardOf[i]).layout();
            int k = indexInShard[i];
            // A computed tensor (rope_freqs) reads no input: it borrows the first tensor's source for a unit of
            // zero elements, so that the read-ahead loads nothing for it.
            ExportPlan.OutputTensor o = in.outs().get(g.values() != null ? 0 : g.source());
            tensors.add(g.values() != null
                    ? new ExportPlan.OutputTensor(g.name(), o.source(), 0, DType.F32, g.ne(), false, false, false)
                    : new ExportPlan.OutputTensor(o.name(), o.source(), o.mergeSteps(), DType.F32, o.shape(),
                    false, false, false));
            long rowBytes = g.type().bytes(g.rowLength(), g.rowLength());
            Slot slot = new Slot(g, rowBytes, g.elements() / g.rowLength(), layout.dataOffset() + layout.offset(k),
                    layout.paddingAfter(k), shardOf[i]);
            slots.add(slot);
            addUnits(units, i, slot, unitBytes);
        }
        ExportPlan plan = ExportPlan.of(tensors, ShardedLayout.of(files0), units, Exporter.lanes(threads));

        if (r.target().toString().isBlank()) {
            throw new IllegalArgumentException("the output path is empty");
        }
        Path target = r.target().toAbsolutePath().normalize();
        Exporter.checkTarget(target, r, in.modelFiles());
        Exporter.checkFreeSpace(target, plan.totalFileBytes());
        return new Layout(type, model, splits, tensors, slots, plan, target, threads, budget, poolSize, unitBytes);
    }

    /** What {@link #run} would write, checked as it checks (the output directory too), with nothing written. */
    static PlannedExport plan(Exporter.Request r, Inputs in) {
        Layout l = layout(r, in);
        AtomicDirectory.checkTarget(l.target(), r.overwrite());
        List<PlannedExport.Tensor> tensors = new ArrayList<>();
        for (int i = 0; i < l.tensors().size(); i++) {
            Slot s = l.slots().get(i);
            GgufModel.Tensor g = s.gguf();
            tensors.add(new PlannedExport.Tensor(g.name(), sourceKind(g, l.tensors().get(i)), statsDtype(g.type()),
                    reversed(g.ne()), l.tensors().get(i).mergeSteps(), l.splits().get(s.shard()).fileName(),
                    g.type().name(), s.rows() * s.rowBytes()));
        }
        List<PlannedExport.Shard> shards = new ArrayList<>();
        for (Split sp : l.splits()) {
            shards.add(new PlannedExport.Shard(sp.fileName(), sp.layout().fileSize(), sp.count()));
        }
        return new PlannedExport(l.target(), statsDtype(floatType(l.type())), Backend.CPU, reason(), tensors,
                shards, l.plan().totalFileBytes(), Exporter.merges(r, in.mergePlan()), OutputFormat.GGUF, l.type());
    }

    static ExportResult run(Exporter.Request r, Inputs in) {
        Layout l = layout(r, in);
        GgufFileType type = l.type();
        GgufModel model = l.model();
        List<Split> splits = l.splits();
        List<ExportPlan.OutputTensor> tensors = l.tensors();
        List<Slot> slots = l.slots();
        ExportPlan plan = l.plan();
        Path target = l.target();
        int threads = l.threads();
        long budget = l.budget();
        int poolSize = l.poolSize();
        long unitBytes = l.unitBytes();
        List<ExportPlan.Unit> units = plan.units();
        CpuKernels kernels = Kernels.get();
        int[] unitsPerTensor = new int[tensors.size()];
        for (ExportPlan.Unit u : units) {
            unitsPerTensor[u.tensorIndex()]++;
        }
        List<Exporter.TensorMerge> merges = new ArrayList<>();
        List<TensorTally> tallies = new ArrayList<>();
        for (int i = 0; i < tensors.size(); i++) {
            ExportPlan.OutputTensor t = tensors.get(i);
            tallies.add(new TensorTally());
            merges.add(t.mergeSteps() == 0 ? null : new Exporter.TensorMerge(t, in.mergePlan(), kernels,
                    unitsPerTensor[i]));
        }
        ProgressListener progress = r.progress() != null ? r.progress() : ProgressListener.NONE;
        Internals.CheckpointAccess acc = Internals.checkpoint();
        List<Manifest.FileRecord> files = new ArrayList<>();
        List<TensorStats> stats = new ArrayList<>();
        List<String> types = new ArrayList<>();
        String reason = reason();
        try (AtomicDirectory out = AtomicDirectory.create(target, r.overwrite())) {
            progress.onStart(tensors.size(), plan.totalFileBytes());
            Exporter.prepass(plan, merges);
            String[] shas = Exporter.execute(plan, merges, tallies, kernels, null, threads, poolSize, unitBytes,
                    out.dir(), r, progress, () -> new Materializer(kernels, slots)::produce);
            for (int i = 0; i < splits.size(); i++) {
                files.add(new Manifest.FileRecord(splits.get(i).fileName(), splits.get(i).layout().fileSize(),
                        shas[i]));
            }
            for (int i = 0; i < tensors.size(); i++) {
                GgufModel.Tensor g = slots.get(i).gguf();
                ExportPlan.OutputTensor t = tensors.get(i);
                TensorTally tally = tallies.get(i);
                stats.add(new TensorStats(g.name(), sourceKind(g, t), statsDtype(g.type()), reversed(g.ne()),
                        t.mergeSteps(), tally.maxAbsDelta(), tally.relDeltaNorm()));
                types.add(g.type().name());
            }
            SequentialWriter.ChannelFactory channels = r.channels() != null ? r.channels()
                    : SequentialWriter.DEFAULT_CHANNELS;
            JsonValue base16 = r.base16() == null ? JsonNull.NULL : Exporter.sourceRecord(r.base16(), acc);
            JsonObject options = Exporter.options(r, in.dtype(), threads, budget, r.maxShardBytes(), reason);
            Map<String, JsonValue> opts = new LinkedHashMap<>(options.members());
            opts.put("format", new JsonString("gguf"));
            opts.put("gguf_type", new JsonString(type.name()));
            opts.put("gguf_architecture", new JsonString(model.architecture()));
            JsonObject manifest = Manifest.build(Exporter.tool(), Exporter.sourceRecord(r.base(), acc), base16,
                    Exporter.adapterRecords(r.adapters(), in.mergePlan()), new JsonObject(opts), files, stats, types);
            Exporter.publish(channels, out, manifest, progress, target);
        }
        ExportResult result = new ExportResult(target, statsDtype(floatType(type)), tensors.size(),
                plan.totalFileBytes(), Exporter.outputPaths(target, files),
                Duration.ofNanos(System.nanoTime() - in.t0()), Backend.CPU, reason, stats);
        progress.onDone(result);
        return result;
    }

    /** Why the CPU: the GGUF export runs there whatever the backend. */
    private static String reason() {
        return "cpu (the GGUF export runs on the CPU; " + Kernels.describe() + ")";
    }

    /** A computed tensor (rope_freqs) has no source: it counts as plain. */
    private static dev.dequant4j.QuantKind sourceKind(GgufModel.Tensor g, ExportPlan.OutputTensor t) {
        return g.values() != null ? dev.dequant4j.QuantKind.PLAIN : t.sourceKind();
    }

    /**
     * Gemma3Model keeps only the embedding rows its tokenizer has (tokenizer.model's pieces padded to vocab_size, or
     * tokenizer.json's vocabulary and added tokens); a file with fewer rows than the matrix is refused rather than
     * cut differently.
     */
    private static void checkEmbeddingRows(GgufModel model, GgufTokenizer tokenizer, Map<String, Path> files,
                                           Path dir) {
        if (!model.architecture().equals("gemma3")) {
            return;
        }
        for (GgufModel.Tensor t : model.tensors()) {
            if (t.name().equals("token_embd.weight") && (!files.containsKey("tokenizer.model")
                    || t.ne()[t.ne().length - 1] != tokenizer.size())) {
                throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, dir, "gemma3 GGUF export needs a tokenizer.model"
                        + " whose vocabulary covers the " + t.ne()[t.ne().length - 1] + " embedding rows (the"
                        + " converter cuts the rows past the tokenizer's; not supported yet)");
            }
        }
    }

    /** The requested type, else the dtype's; the types whose quantizers have not landed are refused. */
    private static GgufFileType fileType(Exporter.Request r, DType dtype) {
        GgufFileType type = r.ggufType() != null ? r.ggufType() : switch (dtype) {
            case F32 -> GgufFileType.F32;
            case BF16 -> GgufFileType.BF16;
            default -> GgufFileType.F16;
        };
        return type;
    }

    private static GgmlType floatType(GgufFileType type) {
        return switch (type) {
            case F32 -> GgmlType.F32;
            case BF16 -> GgmlType.BF16;
            default -> GgmlType.F16;
        };
    }

    /** The float type a GGUF tensor's values are rounded to, for {@link TensorStats} (quantized: F32). */
    private static DType statsDtype(GgmlType t) {
        return switch (t) {
            case F16 -> DType.F16;
            case BF16 -> DType.BF16;
            default -> DType.F32;
        };
    }

    /**
     * Units of whole rows (the quantized types' blocks run along a row), of whole rotary heads for a permuted tensor
     * (the permutation reorders rows within a head); the padding after a tensor is part of its last unit.
     */
    private static void addUnits(List<ExportPlan.Unit> units, int ti, Slot s, long unitBytes) {
        GgufModel.Tensor g = s.gguf();
        long rowLength = g.rowLength();
        long step = Math.max(1, unitBytes / Math.max(1, s.rowBytes()));
        if (g.values() != null) {
            units.add(new ExportPlan.Unit(units.size(), ti, 0, 0, s.shard(), s.dataOffset(),
                    s.rows() * s.rowBytes() + s.padding(), true));
            return;
        }
        if (g.permuteHeads() > 0) {
            long headRows = g.ne().length == 1 ? s.rows() : s.rows() / g.permuteHeads();
            step = Math.max(1, step / headRows) * headRows;
        }
        if (s.rows() == 0) {
            units.add(new ExportPlan.Unit(units.size(), ti, 0, 0, s.shard(), s.dataOffset(), s.padding(), true));
            return;
        }
        for (long row = 0; row < s.rows(); row += step) {
            long n = Math.min(step, s.rows() - row);
            boolean last = row + n == s.rows();
            units.add(new ExportPlan.Unit(units.size(), ti, row * rowLength, n * rowLength, s.shard(),
                    s.dataOffset() + row * s.rowBytes(), n * s.rowBytes() + (last ? s.padding() : 0), last));
        }
    }

    private static byte[] headerBytes(GgufWriter layout) {
        java.nio.ByteBuffer b = layout.header();
        byte[] a = new byte[b.remaining()];
        b.get(a);
        return a;
    }

    private static long[] reversed(long[] ne) {
        long[] shape = new long[ne.length];
        for (int i = 0; i < ne.length; i++) {
            shape[i] = ne[ne.length - 1 - i];
        }
        return shape;
    }

    /**
     * Produces one unit of a GGUF tensor: reads (dequantizes) its rows as float32 chunk by chunk, merges, checks,
     * applies llama's Q/K row permutation, rounds once to the tensor's type and stores; the last unit ends with the
     * tensor's zero padding. One per worker (it owns scratch arrays).
     */
    static final class Materializer {
        private final CpuKernels kernels;
        private final List<Slot> slots;
        private float[] f32 = new float[0];
        private float[] base = new float[0];
        private float[] permuted = new float[0];
        private short[] half = new short[0];

        Materializer(CpuKernels kernels, List<Slot> slots) {
            this.kernels = kernels;
            this.slots = slots;
        }

        void produce(ExportPlan.OutputTensor t, ExportPlan.Unit u, MergeRunner runner, TensorTally tally,
                     MemorySegment buf) {
            Slot s = slots.get(u.tensorIndex());
            GgufModel.Tensor g = s.gguf();
            if (g.values() != null) {
                MemorySegment.copy(g.values(), 0, buf, FLOAT_LE, 0, g.values().length);
                buf.asSlice(g.values().length * 4L, s.padding()).fill((byte) 0);
                return;
            }
            long rowLength = g.rowLength();
            long rows = u.count() / Math.max(1, rowLength);
            long chunkRows = Math.max(1, CpuMaterializer.SUB / Math.max(1, rowLength));
            if (g.permuteHeads() > 0) {
                long headRows = g.ne().length == 1 ? s.rows() : s.rows() / g.permuteHeads();
                chunkRows = Math.max(1, chunkRows / headRows) * headRows;
            }
            long firstRow = u.start() / Math.max(1, rowLength);
            for (long r = 0; r < rows; r += chunkRows) {
                int n = (int) Math.min(chunkRows, rows - r);
                chunk(t, s, firstRow + r, n, runner, tally, buf, r * s.rowBytes());
            }
            long dataBytes = rows * s.rowBytes();
            if (u.byteSize() > dataBytes) {
                buf.asSlice(dataBytes, u.byteSize() - dataBytes).fill((byte) 0);
            }
        }

        private void chunk(ExportPlan.OutputTensor t, Slot s, long row0, int rows, MergeRunner runner,
                           TensorTally tally, MemorySegment buf, long at) {
            GgufModel.Tensor g = s.gguf();
            long rowLength = g.rowLength();
            int c = (int) (rows * rowLength);
            ensure(c);
            long start = row0 * rowLength;
            t.readBase(start, f32, 0, c);
            if (runner != null) {
                System.arraycopy(f32, 0, base, 0, c);
                long cols = Math.max(1, t.mergeCols());
                runner.apply(start / cols, (int) (c / cols), f32, 0);
                double[] acc = new double[3];
                kernels.deltaStats(base, f32, c, acc);
                tally.addDelta(start, acc);
            }
            if (g.add() != 0) {
                for (int i = 0; i < c; i++) {
                    f32[i] += g.add();
                }
            }
            float[] values = f32;
            if (g.permuteHeads() > 0) {
                long firstDim = t.shape()[0];
                permute(f32, permuted, c, g.permuteHeads(), firstDim, (int) (t.numel() / firstDim));
                values = permuted;
            }
            store(g.type(), values, c, rowLength, start, tally, buf, at);
        }

        /**
         * {@code LlamaModel.permute}: within each head of {@code 2 * half} rows (of the source's first dimension,
         * {@code cols} elements each), row {@code i * half + j} moves to {@code 2 * j + i}, so that the rotary pairs
         * go from split halves to interleaved. {@code c} elements of whole heads.
         */
        static void permute(float[] src, float[] dst, int c, int heads, long firstDim, int cols) {
            int headRows = (int) (firstDim / heads);
            int half = headRows / 2;
            int rowsHere = c / cols;
            for (int h0 = 0; h0 < rowsHere; h0 += headRows) {
                for (int i = 0; i < 2; i++) {
                    for (int j = 0; j < half; j++) {
                        System.arraycopy(src, (h0 + i * half + j) * cols, dst, (h0 + 2 * j + i) * cols, cols);
                    }
                }
            }
        }

        private void store(GgmlType type, float[] v, int c, long rowLength, long start, TensorTally tally,
                           MemorySegment buf, long at) {
            switch (type) {
                case F32 -> {
                    countNonFinite(v, c, start, tally);
                    MemorySegment.copy(v, 0, buf, FLOAT_LE, at, c);
                }
                case F16, BF16 -> {
                    int mask = type == GgmlType.F16 ? 0x7C00 : 0x7F80;
                    if (type == GgmlType.F16) {
                        kernels.f32ToF16(v, 0, half, 0, c);
                    } else {
                        kernels.f32ToBf16(v, 0, half, 0, c);
                    }
                    long bad = kernels.countExponentAllOnes(half, 0, c, (short) mask);
                    long first = -1;
                    for (int i = 0; bad > 0 && i < c && first < 0; i++) {
                        if ((half[i] & mask) == mask) {
                            first = start + i;
                        }
                    }
                    tally.addNonFinite(bad, first);
                    MemorySegment.copy(half, 0, buf, SHORT_LE, at, c);
                }
                default -> {
                    countNonFinite(v, c, start, tally);
                    int cols = (int) rowLength;
                    long bytes = GgmlQuantize.rowSize(type, cols) * (c / cols);
                    GgmlQuantize.quantize(type, v, 0, c / cols, cols, buf.asSlice(at, bytes).asByteBuffer());
                }
            }
        }

        private static void countNonFinite(float[] v, int c, long start, TensorTally tally) {
            long bad = 0;
            long first = -1;
            for (int i = 0; i < c; i++) {
                if (!Float.isFinite(v[i]) && bad++ == 0) {
                    first = start + i;
                }
            }
            tally.addNonFinite(bad, first);
        }

        private void ensure(int n) {
            if (f32.length < n) {
                f32 = new float[n];
                base = new float[n];
                permuted = new float[n];
                half = new short[n];
            }
        }
    }
}

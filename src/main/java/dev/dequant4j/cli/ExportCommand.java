package dev.dequant4j.cli;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.PlannedExport;
import dev.dequant4j.OutputFormat;
import dev.dequant4j.TensorStats;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.Printable;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "export", mixinStandardHelpOptions = true,
        description = "Writes a plain FP16/BF16/F32 model directory from a bitsandbytes checkpoint (and adapters).")
final class ExportCommand implements Callable<Integer>, CliJson.Output {
    @Parameters(paramLabel = "MODEL", description = "The model directory (or .safetensors file) to export.")
    Path model;

    @Option(names = "--out", required = true, paramLabel = "DIR", converter = Converters.OutputDirectory.class,
            description = "Output directory (must not exist); with --format gguf it holds model.gguf and the"
                    + " manifest.")
    Path out;

    @Option(names = "--format", paramLabel = "safetensors|gguf", defaultValue = "safetensors",
            description = "Output format (default: ${DEFAULT-VALUE}).")
    OutputFormat format;

    @Option(names = "--gguf-type", paramLabel = "f32|f16|bf16|q8_0|q4_k_m|q5_k_m|q6_k",
            converter = Converters.GgufType.class,
            description = "GGUF tensor types (default: --dtype's, else the model's own); norms stay f32.")
    GgufFileType ggufType;

    @Option(names = "--adapter", paramLabel = "DIR",
            description = "A PEFT LoRA adapter directory to merge; repeat to apply several, in order.")
    List<Path> adapters = new ArrayList<>();

    @Option(names = "--dtype", paramLabel = "f16|bf16|f32", converter = Converters.OutputDType.class,
            description = "Output dtype (default: the model's own, from config.json).")
    DType dtype;

    @Option(names = "--backend", paramLabel = "auto|cpu|cuda", defaultValue = "auto",
            description = "Where to compute (default: ${DEFAULT-VALUE}).")
    Backend backend;

    @Option(names = "--threads", paramLabel = "N", converter = Converters.Positive.class,
            description = "Worker threads (default: all processors).")
    Integer threads;

    @Option(names = "--max-shard-size", paramLabel = "SIZE", converter = Converters.Size.class,
            description = "Largest shard, e.g. 300MB, 5GB (10^9), 2GiB (default: 5GB; for gguf, one file unless"
                    + " given).")
    Long maxShardSize;

    @Option(names = "--memory", paramLabel = "SIZE", defaultValue = "512MiB", converter = Converters.Size.class,
            description = "Working-buffer budget (default: ${DEFAULT-VALUE}).")
    long memory;

    @Option(names = "--base16", paramLabel = "DIR",
            description = "Merge into the original 16-bit checkpoint instead of the dequantized weights.")
    Path base16;

    @Option(names = "--overwrite", description = "Replace the output directory if it exists.")
    boolean overwrite;

    @Option(names = "--tied-embeddings", paramLabel = "as-trained|merge-and-unload", defaultValue = "as-trained",
            converter = Converters.Tied.class,
            description = "An adapter on the embedding or lm_head of a model that ties them: the model as trained"
                    + " (untied where it changed one side; default), or as PEFT's merge_and_unload (every delta"
                    + " added to the shared tensor).")
    TiedEmbeddings tiedEmbeddings;

    @Option(names = "--allow-non-finite", description = "Write NaN/infinite values instead of failing.")
    boolean allowNonFinite;

    @Option(names = "--json", description = "Print a machine-readable summary.")
    boolean json;

    @Option(names = "--verbose", description = "Say which backend and CPU kernels are used, and why.")
    boolean verbose;

    @Option(names = {"-q", "--quiet"}, description = "Print nothing but warnings and errors (and --json's object).")
    boolean quiet;

    @Option(names = "--dry-run", description = "Check everything and print what would be written (tensors, files,"
            + " bytes, merges), without writing anything.")
    boolean dryRun;

    @Spec
    CommandSpec spec;

    @Override
    public boolean json() {
        return json;
    }

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        Backend b = backend;
        if (ggufType != null && format != OutputFormat.GGUF) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--gguf-type needs --format gguf");
        }
        if (verbose) {
            err.println("backend " + b.name().toLowerCase(Locale.ROOT) + ": " + b.describe());
        }
        boolean terminal = System.console() != null && System.console().isTerminal();
        List<LoraAdapter> opened = new ArrayList<>();
        try (Checkpoint base = Checkpoint.open(model);
             Checkpoint original = base16 == null ? null : Checkpoint.open(base16)) {
            Export e = Export.of(base).backend(b).memoryBudget(memory)
                    .overwrite(overwrite).allowNonFinite(allowNonFinite).tiedEmbeddings(tiedEmbeddings);
            if (!quiet && !dryRun) {
                e.progress(new ProgressPrinter(Printable.raw(err), terminal));
            }
            for (Path a : adapters) {
                LoraAdapter adapter = LoraAdapter.open(a);
                opened.add(adapter);
                e.adapter(adapter);
                for (String w : adapter.warnings()) {
                    err.println("warning: " + adapter.directory() + ": " + w);
                }
            }
            if (dtype != null) {
                e.dtype(dtype);
            }
            if (maxShardSize != null) {
                e.maxShardBytes(maxShardSize);
            }
            e.format(format);
            if (ggufType != null) {
                e.ggufType(ggufType);
            }
            if (threads != null) {
                e.threads(threads);
            }
            if (original != null) {
                e.base16(original);
            }
            if (dryRun) {
                printPlan(e.plan(this.out), out, b == Backend.CUDA);
                return 0;
            }
            ExportResult r = e.to(this.out);
            if (verbose) {
                err.println("backend: " + r.backendReason());
            }
            if (json) {
                CliJson.print(out, summary(r));
            } else if (!quiet) {
                // a GGUF export's types: the requested ones, else the dtype's (which the result's dtype is then)
                String as = format != OutputFormat.GGUF ? r.dtype().name()
                        : "GGUF " + (ggufType != null ? ggufType.name() : r.dtype().name());
                printSummary(r, as, out, b == Backend.CUDA || r.backend() == Backend.CUDA);
            }
        } finally {
            for (LoraAdapter a : opened) {
                a.close();
            }
        }
        out.flush();
        return 0;
    }

    /** The plan, as a summary line and tables, or as JSON; nothing with --quiet (a check of the inputs only). */
    private void printPlan(PlannedExport p, PrintWriter out, boolean cudaAsked) {
        if (json) {
            CliJson.print(out, plan(p));
        } else if (!quiet) {
            boolean cuda = cudaAsked || p.backend() == Backend.CUDA;
            boolean gguf = p.format() == OutputFormat.GGUF;
            out.println("would export " + p.tensors().size() + " tensors (" + Table.bytes(p.bytes()) + ") as "
                    + (gguf ? "GGUF " + p.ggufType() : p.dtype()) + " to " + p.directory() + ", backend "
                    + (cuda ? p.backendReason() : p.backend().name().toLowerCase(Locale.ROOT))
                    + "; nothing written (--dry-run)");
            Table t = gguf ? new Table("TENSOR", "SOURCE", "TYPE", "SHAPE", "BYTES", "MERGES", "FILE")
                    : new Table("TENSOR", "SOURCE", "DTYPE", "SHAPE", "MERGES", "FILE");
            for (PlannedExport.Tensor x : p.tensors()) {
                // a GGUF tensor's shape in ggml's order, innermost first, as inspect shows a .gguf file's
                if (gguf) {
                    t.add(x.name(), x.sourceKind().name(), x.type(), Arrays.toString(x.ne()), Table.bytes(x.bytes()),
                            Integer.toString(x.mergeSteps()), x.file());
                } else {
                    t.add(x.name(), x.sourceKind().name(), x.dtype().name(), Arrays.toString(x.shape()),
                            Integer.toString(x.mergeSteps()), x.file());
                }
            }
            t.print(out);
            Table f = new Table("FILE", "SIZE", "TENSORS");
            for (PlannedExport.Shard s : p.shards()) {
                f.add(s.file(), Table.bytes(s.bytes()), Integer.toString(s.tensors()));
            }
            f.print(out);
            if (!p.merges().isEmpty()) {
                Table m = new Table("ADAPTER", "MODULE", "TENSOR");
                for (PlannedExport.Merge x : p.merges()) {
                    m.add(x.adapter().toString(), x.module(), x.tensor());
                }
                m.print(out);
            }
        }
        out.flush();
    }

    /**
     * {@code --dry-run --json}: the summary's fields where they mean the same, and the plan's lists; the format, the
     * GGUF type (null for safetensors), and for each tensor its stored type and data bytes (and for GGUF {@code ne}).
     */
    static JsonObject plan(PlannedExport p) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("dry_run", JsonBoolean.TRUE);
        m.put("format", new JsonString(p.format().name().toLowerCase(Locale.ROOT)));
        m.put("gguf_type", p.ggufType() == null ? JsonNull.NULL : new JsonString(p.ggufType().name()));
        m.put("directory", new JsonString(p.directory().toString()));
        m.put("dtype", new JsonString(p.dtype().name()));
        m.put("tensors", JsonNumber.of(p.tensors().size()));
        m.put("bytes", JsonNumber.of(p.bytes()));
        m.put("backend", new JsonString(p.backend().name().toLowerCase(Locale.ROOT)));
        m.put("backend_reason", new JsonString(p.backendReason()));
        List<JsonValue> shards = new ArrayList<>();
        for (PlannedExport.Shard s : p.shards()) {
            Map<String, JsonValue> o = new LinkedHashMap<>();
            o.put("file", new JsonString(s.file()));
            o.put("bytes", JsonNumber.of(s.bytes()));
            o.put("tensors", JsonNumber.of(s.tensors()));
            shards.add(new JsonObject(o));
        }
        m.put("shards", new JsonArray(shards));
        List<JsonValue> tensors = new ArrayList<>();
        for (PlannedExport.Tensor t : p.tensors()) {
            Map<String, JsonValue> o = new LinkedHashMap<>();
            o.put("name", new JsonString(t.name()));
            o.put("source_kind", new JsonString(t.sourceKind().name()));
            o.put("dtype", new JsonString(t.dtype().name()));
            o.put("shape", InspectCommand.longs(t.shape()));
            if (p.format() == OutputFormat.GGUF) {
                o.put("ne", InspectCommand.longs(t.ne()));
            }
            o.put("type", new JsonString(t.type()));
            o.put("bytes", JsonNumber.of(t.bytes()));
            o.put("merge_steps", JsonNumber.of(t.mergeSteps()));
            o.put("file", new JsonString(t.file()));
            tensors.add(new JsonObject(o));
        }
        m.put("tensor_plan", new JsonArray(tensors));
        List<JsonValue> merges = new ArrayList<>();
        for (PlannedExport.Merge x : p.merges()) {
            Map<String, JsonValue> o = new LinkedHashMap<>();
            o.put("adapter", new JsonString(x.adapter().toString()));
            o.put("module", new JsonString(x.module()));
            o.put("tensor", new JsonString(x.tensor()));
            merges.add(new JsonObject(o));
        }
        m.put("merges", new JsonArray(merges));
        return new JsonObject(m);
    }

    /** The summary; the backend's reason (which may explain why CUDA is not usable) only where CUDA was involved. */
    private static void printSummary(ExportResult r, String as, PrintWriter out, boolean cuda) {
        double secs = r.elapsed().toNanos() / 1e9;
        // println, not %n: the CLI's writer turns every control character it is given into '?'.
        out.println(String.format(Locale.ROOT, "exported %d tensors (%s) as %s to %s in %.1f s (%s/s), backend %s",
                r.tensors(), Table.bytes(r.bytes()), as, r.directory(), secs,
                Table.bytes((long) (r.bytes() / Math.max(secs, 1e-9))),
                cuda ? r.backendReason() : r.backend().name().toLowerCase(Locale.ROOT)));
        out.println("files: " + r.files().stream().map(p -> p.getFileName().toString()).toList());
        List<TensorStats> merged = new ArrayList<>(r.stats().stream().filter(s -> s.mergeSteps() > 0).toList());
        if (!merged.isEmpty()) {
            merged.sort(Comparator.comparingDouble((TensorStats s) -> Double.isNaN(s.relDeltaNorm()) ? -1
                    : s.relDeltaNorm()).reversed());
            out.println("merged " + merged.size() + " tensors; largest relative changes:");
            Table t = new Table("TENSOR", "STEPS", "MAX |DELTA|", "|DELTA|/|W|");
            for (TensorStats s : merged.subList(0, Math.min(5, merged.size()))) {
                t.add(s.name(), Integer.toString(s.mergeSteps()), stat(s.maxAbsDelta()), stat(s.relDeltaNorm()));
            }
            t.print(out);
        }
    }

    private static String stat(double v) {
        return Double.isNaN(v) ? "n/a" : String.format(Locale.ROOT, "%.3g", v);
    }

    static JsonObject summary(ExportResult r) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("directory", new JsonString(r.directory().toString()));
        m.put("dtype", new JsonString(r.dtype().name()));
        m.put("tensors", JsonNumber.of(r.tensors()));
        m.put("bytes", JsonNumber.of(r.bytes()));
        m.put("seconds", JsonNumber.of(r.elapsed().toNanos() / 1e9));
        m.put("backend", new JsonString(r.backend().name().toLowerCase(Locale.ROOT)));
        m.put("backend_reason", new JsonString(r.backendReason()));
        List<JsonValue> files = new ArrayList<>();
        r.files().forEach(p -> files.add(new JsonString(p.getFileName().toString())));
        m.put("files", new JsonArray(files));
        List<JsonValue> stats = new ArrayList<>();
        for (TensorStats s : r.stats()) {
            Map<String, JsonValue> o = new LinkedHashMap<>();
            o.put("name", new JsonString(s.name()));
            o.put("merge_steps", JsonNumber.of(s.mergeSteps()));
            o.put("max_abs_delta", CliJson.number(s.maxAbsDelta()));
            o.put("rel_delta_norm", CliJson.number(s.relDeltaNorm()));
            stats.add(new JsonObject(o));
        }
        m.put("tensor_stats", new JsonArray(stats));
        return new JsonObject(m);
    }
}

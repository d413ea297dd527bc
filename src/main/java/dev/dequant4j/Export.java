package dev.dequant4j;

import dev.dequant4j.internal.export.Exporter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Exports a checkpoint as a plain FP16/BF16/F32 model directory that transformers, llama.cpp's converter and vLLM
 * load without bitsandbytes: quantized weights dequantized bit-exactly, rounded once to the output dtype,
 * {@code quantization_config} removed from config.json, tokenizer and generation files copied, a manifest with
 * hashes written.
 *
 * <pre>{@code
 * try (Checkpoint base = Checkpoint.open(Path.of("llama-bnb-4bit"));
 *      LoraAdapter lora = LoraAdapter.open(Path.of("my-finetune"))) {
 *     ExportResult r = Export.of(base).adapter(lora).dtype(DType.F16).to(Path.of("llama-f16"));
 * }
 * }</pre>
 *
 * The output appears complete or not at all: it is written into a temporary directory beside the target and
 * renamed into place at the end; on any error, cancellation or interrupt nothing is left behind. Every input
 * problem is found before the first byte is written.
 */
public final class Export {
    private final Checkpoint base;
    private final List<LoraAdapter> adapters = new ArrayList<>();
    private Checkpoint base16;
    private DType dtype;
    private Backend backend = Backend.AUTO;
    /** 0: not set (5 GB shards for safetensors, one file for GGUF). */
    private long maxShardBytes;
    private int threads;
    private long memoryBudget = Exporter.DEFAULT_MEMORY_BUDGET;
    private ProgressListener progress = ProgressListener.NONE;
    private boolean overwrite;
    private boolean allowNonFinite;
    private TiedEmbeddings tiedEmbeddings = TiedEmbeddings.AS_TRAINED;
    private OutputFormat format = OutputFormat.SAFETENSORS;
    private GgufFileType ggufType;

    private Export(Checkpoint base) {
        this.base = base;
    }

    /**
     * Starts describing an export of {@code base}; nothing runs until {@link #to(Path)}.
     *
     * @param base the checkpoint to export; it must stay open until {@link #to(Path)} returns
     * @return a new export with the defaults: no adapter, the model's dtype, {@link Backend#AUTO}, 5 GB shards
     */
    public static Export of(Checkpoint base) {
        return new Export(java.util.Objects.requireNonNull(base, "base"));
    }

    /**
     * Merges a LoRA adapter (PEFT semantics, in float32, rounded once at the end). Several adapters apply in the
     * order they are added.
     *
     * @param adapter the adapter; it must stay open until {@link #to(Path)} returns
     * @return this export
     */
    public Export adapter(LoraAdapter adapter) {
        adapters.add(java.util.Objects.requireNonNull(adapter, "adapter"));
        return this;
    }

    /**
     * Takes the weights from the original 16-bit checkpoint instead of dequantizing the base (as Unsloth's
     * {@code merged_16bit} does).
     *
     * @param original the 16-bit checkpoint, with the same tensor names and shapes as the base; {@code null} to
     *                 dequantize the base (the default)
     * @return this export
     */
    public Export base16(Checkpoint original) {
        this.base16 = original;
        return this;
    }

    /**
     * The dtype of the written floating-point tensors.
     *
     * @param dtype F16, BF16 or F32; by default the model's own dtype (config.json), else the quant states' dtype
     * @return this export
     * @throws IllegalArgumentException for any other dtype
     */
    public Export dtype(DType dtype) {
        if (!dtype.isOutputType()) {
            throw new IllegalArgumentException("output dtype must be F16, BF16 or F32, not " + dtype);
        }
        this.dtype = dtype;
        return this;
    }

    /**
     * Where the dequantization and merges run.
     *
     * @param backend {@link Backend#AUTO} (the default) for CUDA where it is usable, else the CPU;
     *                {@link Backend#CUDA} fails the export with {@link Dequant4jException.Kind#BACKEND} where it is
     *                not
     * @return this export
     */
    public Export backend(Backend backend) {
        this.backend = java.util.Objects.requireNonNull(backend);
        return this;
    }

    /**
     * The largest shard, counted in tensor bytes, as transformers' {@code max_shard_size}. For a GGUF export, the
     * file is split only when this is set, as {@code convert_hf_to_gguf.py --split-max-size} splits it
     * ({@code model-00001-of-0000N.gguf}, with gguf-split's {@code split.*} keys).
     *
     * @param bytes the limit; default 5 GB (5 * 10^9) for safetensors, no split for GGUF; a tensor larger than it
     *              gets a shard of its own
     * @return this export
     * @throws IllegalArgumentException if {@code bytes} is not positive
     */
    public Export maxShardBytes(long bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive");
        }
        this.maxShardBytes = bytes;
        return this;
    }

    /**
     * The number of worker threads.
     *
     * @param threads the count; by default the number of processors
     * @return this export
     * @throws IllegalArgumentException if {@code threads} is not positive
     */
    public Export threads(int threads) {
        if (threads <= 0) {
            throw new IllegalArgumentException("threads must be positive");
        }
        this.threads = threads;
        return this;
    }

    /**
     * The working memory the export may hold at once; the mapped input is not counted.
     *
     * @param bytes the budget in bytes; default 512 MiB
     * @return this export
     * @throws IllegalArgumentException if {@code bytes} is not positive
     */
    public Export memoryBudget(long bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("memoryBudget must be positive");
        }
        this.memoryBudget = bytes;
        return this;
    }

    /**
     * Reports progress, and lets the caller cancel.
     *
     * @param listener called from worker threads; default {@link ProgressListener#NONE}
     * @return this export
     */
    public Export progress(ProgressListener listener) {
        this.progress = java.util.Objects.requireNonNull(listener);
        return this;
    }

    /**
     * Whether an existing output directory is replaced.
     *
     * @param overwrite true to replace it; by default the export fails with
     *                  {@link Dequant4jException.Kind#OUTPUT_EXISTS}
     * @return this export
     */
    public Export overwrite(boolean overwrite) {
        this.overwrite = overwrite;
        return this;
    }

    /**
     * Whether NaN, infinite and out-of-range values are written.
     *
     * @param allow true to write them; by default the export fails with {@link Dequant4jException.Kind#NON_FINITE},
     *              naming the tensor
     * @return this export
     */
    public Export allowNonFinite(boolean allow) {
        this.allowNonFinite = allow;
        return this;
    }

    /**
     * What an adapter on the embedding or output layer of a model that ties them becomes: by default
     * {@link TiedEmbeddings#AS_TRAINED}, the model the adapter trained (untied where it changed one side).
     *
     * @param tied the policy
     * @return this export
     */
    public Export tiedEmbeddings(TiedEmbeddings tied) {
        this.tiedEmbeddings = java.util.Objects.requireNonNull(tied, "tied");
        return this;
    }

    /**
     * The output format (default {@link OutputFormat#SAFETENSORS}). {@link OutputFormat#GGUF} writes
     * {@code model.gguf} into the output directory, with the tensor names, order, layout and metadata that llama.cpp's
     * {@code convert_hf_to_gguf.py} writes for the architecture (the architectures supported are listed in
     * docs/FORMATS-SUPPORTED.md; any other is refused before anything is written).
     *
     * @param format the format
     * @return this export
     */
    public Export format(OutputFormat format) {
        this.format = java.util.Objects.requireNonNull(format, "format");
        return this;
    }

    /**
     * The GGUF tensor types; by default the {@link #dtype} (or the model's own dtype) as F32, F16 or BF16. Only for
     * {@link OutputFormat#GGUF}.
     *
     * @param type the types
     * @return this export
     */
    public Export ggufType(GgufFileType type) {
        this.ggufType = java.util.Objects.requireNonNull(type, "type");
        return this;
    }

    /**
     * Runs the export.
     *
     * @param out the output directory; it is created, or replaced with {@link #overwrite(boolean)}
     * @return what was written
     * @throws Dequant4jException for bad input, an existing output, a failed write or a cancellation; nothing is
     *                            left at {@code out} then
     */
    public ExportResult to(Path out) {
        if (ggufType != null && format != OutputFormat.GGUF) {
            throw new IllegalArgumentException("ggufType is set but the format is " + format);
        }
        return Exporter.run(request(out));
    }

    /**
     * Checks everything {@link #to} would check, the target included, and says what it would write, without
     * writing anything (no output or temporary directory is created). The progress listener is not called. For
     * {@link OutputFormat#GGUF}, the GGUF export's checks run too (architecture, tokenizer, types) and the plan lists
     * the GGUF file's tensors and files.
     *
     * @param out the output directory the export would write
     * @return the tensors, files and merges the export would write
     * @throws Dequant4jException for bad input or an existing output, as {@link #to} would
     */
    public PlannedExport plan(Path out) {
        return Exporter.plan(request(out));
    }

    private Exporter.Request request(Path out) {
        return new Exporter.Request(base, base16, List.copyOf(adapters), dtype, backend, maxShardBytes, threads,
                memoryBudget, progress, out, overwrite, allowNonFinite, null, tiedEmbeddings, format, ggufType);
    }
}

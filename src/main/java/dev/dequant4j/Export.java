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
    private long maxShardBytes = Exporter.DEFAULT_MAX_SHARD_BYTES;
    private int threads;
    private long memoryBudget = Exporter.DEFAULT_MEMORY_BUDGET;
    private ProgressListener progress = ProgressListener.NONE;
    private boolean overwrite;
    private boolean allowNonFinite;
    private TiedEmbeddings tiedEmbeddings = TiedEmbeddings.AS_TRAINED;

    private Export(Checkpoint base) {
        this.base = base;
    }

    public static Export of(Checkpoint base) {
        return new Export(java.util.Objects.requireNonNull(base, "base"));
    }

    /**
     * Merges a LoRA adapter (PEFT semantics, in float32, rounded once at the end). Several adapters apply in the
     * order they are added. The adapter must stay open until {@link #to} returns.
     */
    public Export adapter(LoraAdapter adapter) {
        adapters.add(java.util.Objects.requireNonNull(adapter, "adapter"));
        return this;
    }

    /**
     * Takes the weights from the original 16-bit checkpoint instead of dequantizing the base (as Unsloth's
     * {@code merged_16bit} does). It must have the same tensor names and shapes as the base.
     */
    public Export base16(Checkpoint original) {
        this.base16 = original;
        return this;
    }

    /** F16, BF16 or F32; by default the model's own dtype (config.json), else the quant states' dtype. */
    public Export dtype(DType dtype) {
        if (!dtype.isOutputType()) {
            throw new IllegalArgumentException("output dtype must be F16, BF16 or F32, not " + dtype);
        }
        this.dtype = dtype;
        return this;
    }

    public Export backend(Backend backend) {
        this.backend = java.util.Objects.requireNonNull(backend);
        return this;
    }

    /** Largest shard file (tensor bytes), as transformers' {@code max_shard_size}; default 5 GB (5 * 10^9). */
    public Export maxShardBytes(long bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive");
        }
        this.maxShardBytes = bytes;
        return this;
    }

    /** Worker threads; by default the number of processors. */
    public Export threads(int threads) {
        if (threads <= 0) {
            throw new IllegalArgumentException("threads must be positive");
        }
        this.threads = threads;
        return this;
    }

    /** Bytes of working buffers the export may hold at once (default 512 MiB); the mapped input is not counted. */
    public Export memoryBudget(long bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("memoryBudget must be positive");
        }
        this.memoryBudget = bytes;
        return this;
    }

    public Export progress(ProgressListener listener) {
        this.progress = java.util.Objects.requireNonNull(listener);
        return this;
    }

    /** Replace an existing output directory (default: refuse). */
    public Export overwrite(boolean overwrite) {
        this.overwrite = overwrite;
        return this;
    }

    /** Write NaN/infinite values instead of failing on them (default: fail, naming the tensor). */
    public Export allowNonFinite(boolean allow) {
        this.allowNonFinite = allow;
        return this;
    }

    /**
     * What an adapter on the embedding or output layer of a model that ties them becomes: by default
     * {@link TiedEmbeddings#AS_TRAINED}, the model the adapter trained (untied where it changed one side).
     */
    public Export tiedEmbeddings(TiedEmbeddings tied) {
        this.tiedEmbeddings = java.util.Objects.requireNonNull(tied, "tied");
        return this;
    }

    /** Runs the export into directory {@code out}. */
    public ExportResult to(Path out) {
        return Exporter.run(new Exporter.Request(base, base16, List.copyOf(adapters), dtype, backend,
                maxShardBytes, threads, memoryBudget, progress, out, overwrite, allowNonFinite, null, tiedEmbeddings));
    }
}

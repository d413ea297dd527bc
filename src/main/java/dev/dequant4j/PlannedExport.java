package dev.dequant4j;

import dev.dequant4j.internal.safetensors.TensorEntry;
import java.nio.file.Path;
import java.util.List;

/**
 * What an export would write, from {@link Export#plan(Path)}: every input and the target were checked as
 * {@link Export#to(Path)} checks them, and nothing was written. For {@link OutputFormat#GGUF}, the tensors are the
 * GGUF file's (llama.cpp's names, order and types) and the files are {@code model.gguf} or its split files, laid out
 * by the same code that writes them.
 *
 * @param directory     the output directory, absolute
 * @param dtype         the dtype of the floating-point tensors (for GGUF, the float type of the GGUF type: F32 for
 *                      the quantized ones, as {@link ExportResult#dtype()})
 * @param backend       the backend that would run it ({@link Backend#CPU} or {@link Backend#CUDA}, never AUTO)
 * @param backendReason why this backend (AUTO's choice, or the reason CUDA is not usable)
 * @param tensors       every tensor to write, in output order
 * @param shards        the files that hold the tensors, in file order: the safetensors shards, or the GGUF file(s)
 * @param bytes         the bytes of those files, headers included (as {@link ExportResult#bytes()})
 * @param merges        every adapter module to merge, in merge order
 * @param format        the output format
 * @param ggufType      the GGUF tensor types, or null for {@link OutputFormat#SAFETENSORS}
 */
public record PlannedExport(Path directory, DType dtype, Backend backend, String backendReason,
                            List<Tensor> tensors, List<Shard> shards, long bytes, List<Merge> merges,
                            OutputFormat format, GgufFileType ggufType) {
    /** Copies the lists, so that the record stays immutable. */
    public PlannedExport {
        tensors = List.copyOf(tensors);
        shards = List.copyOf(shards);
        merges = List.copyOf(merges);
        java.util.Objects.requireNonNull(format, "format");
    }

    /**
     * A plan of a safetensors export.
     *
     * @param directory     the output directory, absolute
     * @param dtype         the dtype of the floating-point tensors
     * @param backend       the backend that would run it
     * @param backendReason why this backend
     * @param tensors       every tensor to write, in output order
     * @param shards        the safetensors files, in shard order
     * @param bytes         the bytes of the safetensors files, headers included
     * @param merges        every adapter module to merge, in merge order
     */
    public PlannedExport(Path directory, DType dtype, Backend backend, String backendReason, List<Tensor> tensors,
                         List<Shard> shards, long bytes, List<Merge> merges) {
        this(directory, dtype, backend, backendReason, tensors, shards, bytes, merges, OutputFormat.SAFETENSORS,
                null);
    }

    /**
     * One tensor to write.
     *
     * @param name       its name in the output (for GGUF, llama.cpp's name, e.g. {@code blk.0.attn_q.weight})
     * @param sourceKind how it is stored in the checkpoint ({@link QuantKind#PLAIN} for a GGUF tensor computed from
     *                   config.json, such as {@code rope_freqs.weight})
     * @param dtype      the dtype to write (a non-float tensor keeps its own; for GGUF, the float type its values
     *                   are rounded to, F32 for a quantized type)
     * @param shape      the logical shape to write, outermost dimension first (for GGUF, the reverse of ggml's
     *                   {@code ne})
     * @param mergeSteps how many adapter parts are merged into it (0: copied or dequantized only)
     * @param file       the file it goes into
     * @param type       the stored type: the safetensors dtype name ({@code F16}), or the GGUF tensor type
     *                   ({@code Q4_K}, {@code F32})
     * @param bytes      the bytes of its data, without header or padding
     */
    public record Tensor(String name, QuantKind sourceKind, DType dtype, long[] shape, int mergeSteps, String file,
                         String type, long bytes) {
        /** Copies {@code shape}, so that the record stays immutable. */
        public Tensor {
            shape = shape.clone();
        }

        /**
         * A safetensors tensor: its type is the dtype's name, its bytes the dtype's size of its elements.
         *
         * @param name       its name in the output
         * @param sourceKind how it is stored in the checkpoint
         * @param dtype      the dtype to write
         * @param shape      the logical shape to write
         * @param mergeSteps how many adapter parts are merged into it
         * @param file       the safetensors file it goes into
         */
        public Tensor(String name, QuantKind sourceKind, DType dtype, long[] shape, int mergeSteps, String file) {
            this(name, sourceKind, dtype, shape, mergeSteps, file, dtype.name(), dtype.byteSize(TensorEntry.numel(shape)));
        }

        /** {@return a copy of the logical shape to write} */
        @Override
        public long[] shape() {
            return shape.clone();
        }

        /** {@return ggml's {@code ne} of it: the shape reversed, innermost dimension first} */
        public long[] ne() {
            long[] ne = new long[shape.length];
            for (int i = 0; i < shape.length; i++) {
                ne[i] = shape[shape.length - 1 - i];
            }
            return ne;
        }
    }

    /**
     * One output file that holds tensors.
     *
     * @param file    its name
     * @param bytes   its size, header included
     * @param tensors how many tensors it holds
     */
    public record Shard(String file, long bytes, int tensors) {}

    /**
     * One adapter module merged into one tensor.
     *
     * @param adapter the adapter's directory
     * @param module  the module's name in the adapter
     * @param tensor  the output tensor it changes
     */
    public record Merge(Path adapter, String module, String tensor) {}
}

package dev.dequant4j;

import java.nio.file.Path;
import java.util.List;

/**
 * What an export would write, from {@link Export#plan(Path)}: every input and the target were checked as
 * {@link Export#to(Path)} checks them, and nothing was written.
 *
 * @param directory     the output directory, absolute
 * @param dtype         the dtype of the floating-point tensors
 * @param backend       the backend that would run it ({@link Backend#CPU} or {@link Backend#CUDA}, never AUTO)
 * @param backendReason why this backend (AUTO's choice, or the reason CUDA is not usable)
 * @param tensors       every tensor to write, in output order
 * @param shards        the safetensors files, in shard order
 * @param bytes         the bytes of the safetensors files, headers included (as {@link ExportResult#bytes()})
 * @param merges        every adapter module to merge, in merge order
 */
public record PlannedExport(Path directory, DType dtype, Backend backend, String backendReason,
                            List<Tensor> tensors, List<Shard> shards, long bytes, List<Merge> merges) {
    /** Copies the lists, so that the record stays immutable. */
    public PlannedExport {
        tensors = List.copyOf(tensors);
        shards = List.copyOf(shards);
        merges = List.copyOf(merges);
    }

    /**
     * One tensor to write.
     *
     * @param name       its name in the output
     * @param sourceKind how it is stored in the checkpoint
     * @param dtype      the dtype to write (a non-float tensor keeps its own)
     * @param shape      the logical shape to write
     * @param mergeSteps how many adapter parts are merged into it (0: copied or dequantized only)
     * @param file       the safetensors file it goes into
     */
    public record Tensor(String name, QuantKind sourceKind, DType dtype, long[] shape, int mergeSteps, String file) {
        /** Copies {@code shape}, so that the record stays immutable. */
        public Tensor {
            shape = shape.clone();
        }

        /** {@return a copy of the logical shape to write} */
        @Override
        public long[] shape() {
            return shape.clone();
        }
    }

    /**
     * One safetensors file.
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

package dev.dequant4j;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * The outcome of an export.
 *
 * @param directory     the output directory, complete and in place
 * @param dtype         the dtype of the floating-point tensors written
 * @param tensors       the number of tensors written
 * @param bytes         the bytes of the safetensors files written, headers included
 * @param files         the safetensors files written, in shard order
 * @param elapsed       the wall time of the export
 * @param backend       the backend that ran it ({@link Backend#CPU} or {@link Backend#CUDA}, never AUTO)
 * @param backendReason why this backend was used (AUTO's choice, or the reason CUDA was not)
 * @param stats         per written tensor, in output order, what the export did to it
 */
public record ExportResult(Path directory, DType dtype, int tensors, long bytes, List<Path> files,
                           Duration elapsed, Backend backend, String backendReason, List<TensorStats> stats) {
    /** Copies the lists, so that the record stays immutable. */
    public ExportResult {
        files = List.copyOf(files);
        stats = List.copyOf(stats);
    }
}

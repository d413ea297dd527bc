package dev.dequant4j;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * The outcome of an export.
 *
 * @param backendReason why this backend was used (AUTO's choice, or the reason CUDA was not)
 */
public record ExportResult(Path directory, DType dtype, int tensors, long bytes, List<Path> files,
                           Duration elapsed, Backend backend, String backendReason, List<TensorStats> stats) {
    public ExportResult {
        files = List.copyOf(files);
        stats = List.copyOf(stats);
    }
}

package dev.dequant4j;

import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.cuda.CudaBackend;

/**
 * Where the work of an export runs. {@link #AUTO} uses CUDA when a usable GPU and the natives are there, the CPU
 * otherwise, and {@link #describe()} says why.
 */
public enum Backend {
    AUTO, CPU, CUDA;

    /** Whether this backend can run here (AUTO and CPU always can). */
    public boolean isAvailable() {
        return this != CUDA || CudaBackend.probe().usable();
    }

    /**
     * What this backend would use here, or why it cannot run: the CPU kernels in use, the GPU, or the reason CUDA is
     * not usable (natives not built, no driver, no device, driver too old, ...), with its cause chain.
     */
    public String describe() {
        return switch (this) {
            case CPU -> "CPU: " + Kernels.describe();
            case CUDA -> CudaBackend.probe().reason();
            case AUTO -> {
                CudaBackend.Availability a = CudaBackend.probe();
                yield a.usable() ? a.reason() : "CPU (" + a.reason() + "); " + Kernels.describe();
            }
        };
    }
}

package dev.dequant4j;

import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.cuda.CudaBackend;

/**
 * Where the work of an export runs. {@link #AUTO} uses CUDA when a usable GPU and the natives are there, the CPU
 * otherwise, and {@link #describe()} says why.
 */
public enum Backend {
    /** CUDA when a usable GPU and the natives are there, else the CPU. */
    AUTO,
    /** The CPU: the Vector API kernels when {@code jdk.incubator.vector} is resolved, else the scalar ones. */
    CPU,
    /** The GPU; an export asked for it fails with {@link Dequant4jException.Kind#BACKEND} where it is not usable. */
    CUDA;

    /**
     * Whether this backend can run here.
     *
     * @return true for AUTO and CPU, and for CUDA when a usable GPU and the natives are there
     */
    public boolean isAvailable() {
        return this != CUDA || CudaBackend.probe().usable();
    }

    /**
     * What this backend would use here, or why it cannot run: the CPU kernels in use, the GPU, or the reason CUDA is
     * not usable (natives not built, no driver, no device, driver too old, ...), with its cause chain.
     *
     * @return one line for a log or a user
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

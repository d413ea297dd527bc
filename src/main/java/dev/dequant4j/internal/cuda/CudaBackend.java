package dev.dequant4j.internal.cuda;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * The CUDA backend: materializes tensors (dequantize, merge, round once) on a GPU with dequant4j's own kernels.
 * Dequantization gives the scalar oracle's bits, and so do merges (DoRA within one ulp: its norms are summed in
 * another order); {@code -Ddequant4j.cuda.fusedMerge=true} trades that for fused multiply-adds in the rank loop of
 * F16/BF16 merges, within the bound docs/CUDA.md states.
 *
 * <p>Needs the natives of a {@code -Pcuda} build, the JavaCPP CUDA presets on the class path, a CUDA 13 runtime
 * ({@code libcudart.so.13}), an NVIDIA driver r580+ and a GPU of compute capability 8.0+. {@link #probe()} says
 * which of these is missing; {@code -Ddequant4j.cuda.device=N} picks the GPU (default 0).
 *
 * <p>Thread-safe: calls are serialized (one tensor at a time; its chunks overlap on two streams).
 */
public final class CudaBackend implements AutoCloseable {
    /**
     * Whether a backend can be opened, and why not.
     *
     * @param reason for an unusable backend the whole story, cause chain included; for a usable one, the device
     * @param device the device that would be used ("device 0: NVIDIA H100 ..."), or null
     */
    public record Availability(boolean usable, String reason, String device) {}

    private CudaEngine engine;

    private CudaBackend(CudaEngine engine) {
        this.engine = engine;
    }

    /** Checks natives, driver and the requested device. Never throws. */
    public static Availability probe() {
        try {
            DeviceCheck.Check c = check();
            return c.device() == null ? new Availability(false, c.reason(), null)
                    : new Availability(true, "CUDA " + c.device().describe(), c.device().describe());
        } catch (Throwable t) {
            return new Availability(false, "CUDA probe failed: " + CudaRuntime.chain(t), null);
        }
    }

    private static DeviceCheck.Check check() {
        String failure = CudaRuntime.loadFailure();
        if (failure != null) {
            return new DeviceCheck.Check(null, failure);
        }
        return DeviceCheck.check(CudaRuntime.requestedDevice());
    }

    /**
     * Opens the backend on the device of {@code -Ddequant4j.cuda.device} (default 0).
     *
     * @throws Dequant4jException with {@link #probe()}'s reason when CUDA is not usable
     */
    public static CudaBackend open() {
        return open(CudaEngine.Options.fromSystemProperties());
    }

    static CudaBackend open(CudaEngine.Options options) {
        DeviceCheck.Check c;
        try {
            c = check();
        } catch (Throwable t) {
            throw new Dequant4jException(Kind.BACKEND, "CUDA backend not usable: " + CudaRuntime.chain(t));
        }
        if (c.device() == null) {
            throw new Dequant4jException(Kind.BACKEND, "CUDA backend not usable: " + c.reason());
        }
        return new CudaBackend(new CudaEngine(c.device(), options));
    }

    /**
     * Produces the whole tensor: its base values (dequantized, or converted), then {@code ops} in order in fp32,
     * rounded once to {@code out}, as {@code numel} little-endian values in {@code dst} (a mapped region of the
     * output file or any other writable segment of exactly that size). Everything is checked before the device is
     * used.
     *
     * @throws Dequant4jException naming the tensor for arguments that do not fit it, a CUDA error, or too little
     *                            device memory for even one row
     */
    public synchronized void materialize(LogicalTensor src, List<MergeOp> ops, DType out, MemorySegment dst) {
        if (engine == null) {
            throw new IllegalStateException("CUDA backend is closed");
        }
        engine.materialize(TensorJob.of(src, ops, out, dst.byteSize()), dst);
    }

    /** The device in use, as {@link Availability#device()} described it when opened. */
    public synchronized String device() {
        return engine == null ? "closed" : engine.device().describe();
    }

    /** Device memory this backend holds (reused buffers); 0 after {@link #close()}. */
    public synchronized long deviceBytesInUse() {
        return engine == null ? 0 : engine.deviceBytes();
    }

    /** Pinned host memory this backend holds; 0 after {@link #close()}. */
    public synchronized long pinnedBytesInUse() {
        return engine == null ? 0 : engine.pinnedBytes();
    }

    /** Frees every device and pinned buffer, stream and event. */
    @Override
    public synchronized void close() {
        if (engine != null) {
            engine.close();
            engine = null;
        }
    }
}

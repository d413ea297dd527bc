package dev.dequant4j.internal.cpu;

/**
 * Chooses the CPU kernels once: the Vector API implementation when the {@code jdk.incubator.vector} module is
 * present and usable, the scalar reference otherwise. {@code -Ddequant4j.cpu=scalar} forces the reference.
 */
public final class Kernels {
    private Kernels() {}

    private static final class Holder {
        static final CpuKernels INSTANCE = VectorLookup.lookup();
    }

    /** The kernels to use on this JVM. */
    public static CpuKernels get() {
        return Holder.INSTANCE;
    }

    /** Why the vector kernels are or are not in use, for logs and {@code --verbose}. */
    public static String describe() {
        get();
        return VectorLookup.reason();
    }
}

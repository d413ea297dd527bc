package dev.dequant4j.internal.cpu;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.Optional;

/**
 * Finds the Vector API kernels the way Lucene's {@code VectorizationProvider} does: only if the incubator module is
 * in the boot layer, the JVM is not newer than the newest version tested (the incubator API may change), and the
 * implementation's own checks pass; otherwise the scalar reference, with the reason logged once.
 */
final class VectorLookup {
    /** Newest Java feature release the Vector API kernels were tested on; raise with -Ddequant4j.vector.maxJava. */
    static final int MAX_TESTED_JAVA = 25;
    private static final String IMPL = "dev.dequant4j.internal.cpu.VectorKernels";
    private static volatile String reason = "not looked up yet";

    private VectorLookup() {}

    static String reason() {
        return reason;
    }

    static CpuKernels lookup() {
        String forced = System.getProperty("dequant4j.cpu", "auto");
        if (forced.equals("scalar")) {
            reason = "scalar kernels (forced by -Ddequant4j.cpu=scalar)";
            return ScalarKernels.INSTANCE;
        }
        int feature = Runtime.version().feature();
        int max = Integer.getInteger("dequant4j.vector.maxJava", MAX_TESTED_JAVA);
        if (feature > max) {
            return fallback("Java " + feature + " is newer than the newest tested with the Vector API kernels (" + max
                    + "); pass -Ddequant4j.vector.maxJava=" + feature + " to try them", forced);
        }
        Optional<Module> vectorModule = ModuleLayer.boot().findModule("jdk.incubator.vector");
        if (vectorModule.isEmpty()) {
            return fallback("the Vector API is not enabled; pass '--add-modules jdk.incubator.vector' to the JVM for "
                    + "faster CPU kernels", forced);
        }
        Module self = VectorLookup.class.getModule();
        if (self.isNamed()) {
            self.addReads(vectorModule.get());
        }
        try {
            Class<?> cls = MethodHandles.lookup().findClass(IMPL);
            CpuKernels k = (CpuKernels) MethodHandles.lookup()
                    .findConstructor(cls, MethodType.methodType(void.class)).invoke();
            reason = k.name() + " kernels (Vector API)";
            return k;
        } catch (ClassNotFoundException e) {
            return fallback("this build has no Vector API kernels", forced);
        } catch (UnsupportedOperationException e) {
            return fallback("the Vector API kernels cannot run here: " + e.getMessage(), forced);
        } catch (Throwable e) {
            return fallback("the Vector API kernels failed to load: " + e, forced);
        }
    }

    private static CpuKernels fallback(String why, String forced) {
        if (forced.equals("vector")) {
            throw new IllegalStateException("-Ddequant4j.cpu=vector, but " + why);
        }
        reason = "scalar kernels: " + why;
        System.getLogger("dev.dequant4j").log(System.Logger.Level.INFO, reason);
        return ScalarKernels.INSTANCE;
    }
}

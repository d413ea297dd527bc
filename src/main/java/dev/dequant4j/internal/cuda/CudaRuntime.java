package dev.dequant4j.internal.cuda;


import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.bytedeco.javacpp.Loader;

/**
 * Loads the natives (the CUDA presets' runtime binding, then ours) once per JVM and checks a device, turning every
 * failure into a one-line reason that keeps the whole cause chain: the loaders' top-level messages ("no
 * jnicudart in java.library.path") rarely say what is actually missing.
 *
 * <p>This class only names JavaCPP classes in calls it makes after checking they are there, so it links without
 * them; everything that uses the presets' types ({@link DeviceCheck}, {@link CudaEngine}) is touched only after
 * {@link #loadFailure()} returned null.
 */
final class CudaRuntime {
    private CudaRuntime() {}

    static final String DEVICE_PROPERTY = "dequant4j.cuda.device";
    static final String PLATFORM = "linux-x86_64";
    /** Our JNI library as a class path resource; absent unless the natives jar (or a CLI jar built with them) is there. */
    static final String NATIVES = "dev/dequant4j/internal/cuda/" + PLATFORM + "/libjnidequant4j_cuda.so";
    private static final class Loaded {
        static final String FAILURE = load();
    }

    /** Null once everything is loaded, else why it could not be. */
    static String loadFailure() {
        return Loaded.FAILURE;
    }

    private static String load() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "");
        if (!os.startsWith("linux") || !(arch.equals("amd64") || arch.equals("x86_64"))) {
            return "dequant4j's CUDA natives exist for " + PLATFORM + " only, not " + os + "-" + arch;
        }
        if (CudaRuntime.class.getClassLoader().getResource(NATIVES) == null) {
            return "dequant4j's CUDA natives are not in this build (no " + NATIVES + " on the class or module "
                    + "path): add the dependency dev.dequant4j:dequant4j-platform, or the dequant4j " + PLATFORM
                    + " jar and the JavaCPP CUDA presets";
        }
        if (!onClassPath("org.bytedeco.javacpp.Loader")) {
            return "JavaCPP (org.bytedeco:javacpp:1.5.13 and its " + PLATFORM + " jar) is not on the class path";
        }
        if (!onClassPath("org.bytedeco.cuda.global.cudart")) {
            return "the JavaCPP CUDA presets (org.bytedeco:cuda:13.1-9.19-1.5.13 and its " + PLATFORM
                    + " jar) are not on the class path";
        }
        try {
            Loader.load(org.bytedeco.cuda.global.cudart.class);
        } catch (Throwable t) {
            String chain = chain(t);
            if (chain.contains("libcuda.so")) {
                return "no NVIDIA driver: libcuda.so.1 cannot be loaded (" + chain + ")";
            }
            if (chain.contains("libcudart")) {
                return "no CUDA 13 runtime: libcudart.so.13 cannot be loaded; install the CUDA 13 runtime or toolkit "
                        + "and put its lib64 on the loader path (" + chain + ")";
            }
            return "cannot load the JavaCPP CUDA presets (" + chain + ")";
        }
        return loadKernels();
    }

    /**
     * Loads our kernels' binding alone: it needs libcudart.so.13 but no driver, so the host-side checks of the
     * launchers work on any machine with the runtime. Null when loaded, else why not.
     */
    static String loadKernels() {
        try {
            Loader.load(CudaKernels.class);
        } catch (Throwable t) {
            return "cannot load dequant4j's CUDA natives (" + chain(t) + ")";
        }
        int abi = CudaKernels.dq4j_abi_version();
        long source = CudaKernels.dq4j_sizeof_source();
        long step = CudaKernels.dq4j_sizeof_step();
        if (abi != CudaKernels.ABI_VERSION || source != Loader.sizeof(CudaKernels.Source.class)
                || step != Loader.sizeof(CudaKernels.Step.class)) {
            return "dequant4j's CUDA natives are from another build (ABI " + abi + ", structs " + source + "/" + step
                    + " bytes; this jar expects ABI " + CudaKernels.ABI_VERSION + ")";
        }
        return null;
    }

    private static boolean onClassPath(String name) {
        try {
            Class.forName(name, false, CudaRuntime.class.getClassLoader());
            return true;
        } catch (ClassNotFoundException | LinkageError e) {
            return false;
        }
    }

    /** The device asked for with {@code -Ddequant4j.cuda.device=N} (default 0), or -1 if the value is not a number. */
    static int requestedDevice() {
        String v = System.getProperty(DEVICE_PROPERTY);
        if (v == null || v.isBlank()) {
            return 0;
        }
        try {
            int d = Integer.parseInt(v.strip());
            return d >= 0 ? d : -1;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** The message of every throwable in the cause chain (suppressed ones too), "; caused by "-joined. */
    static String chain(Throwable t) {
        List<String> parts = new ArrayList<>();
        for (Throwable c = t; c != null && parts.size() < 16; c = c.getCause()) {
            parts.add(c.getClass().getSimpleName() + ": " + c.getMessage());
            for (Throwable s : c.getSuppressed()) {
                parts.add(s.getClass().getSimpleName() + ": " + s.getMessage());
            }
        }
        return String.join("; caused by ", parts).replace('\n', ' ');
    }
}

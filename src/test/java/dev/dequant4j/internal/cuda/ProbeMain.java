package dev.dequant4j.internal.cuda;

/** Prints CudaBackend.probe() in a JVM whose class path the test chooses. */
public final class ProbeMain {
    private ProbeMain() {}

    public static void main(String[] args) {
        CudaBackend.Availability a = CudaBackend.probe();
        System.out.println(a.usable() + "|" + a.reason());
    }
}

package dev.dequant4j.cli;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.lang.module.ModuleFinder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * Restarts {@code java -jar dequant4j-cli.jar export ...} with {@code --add-modules jdk.incubator.vector}.
 *
 * <p>An executable jar's manifest cannot add a module, so a plain {@code java -jar} would run the scalar kernels,
 * 3 to 10 times slower than the Vector API ones. Only an {@code export} that will run is worth a second JVM start
 * (its help and usage errors are answered by the first: {@link Main#computesAnExport}), and only when the process
 * was started from the jar itself: a caller that built its own command line (tests, scripts, IDEs, the
 * {@code bin/dequant4j} launcher) chose its flags. {@code -Ddequant4j.relaunch=false} turns it off.
 *
 * <p>The second JVM announces the module on stderr ({@value #INCUBATOR_WARNING}) before any of our code runs; the
 * first drops exactly that line, and passes everything else through unchanged ({@link #copyStderr}).
 *
 * <p>On HotSpot the second JVM also compiles the CPU kernels with C2 after a hundredth of the usual invocations:
 * until then the Vector API runs through its Java fallback code, which C2 would otherwise compile too. That took
 * 0.75 s (11 %) and 1.6 CPU-s off a one-shot export of a 2-layer Llama-3-8B-shaped model on 2 cores at the median
 * (less CPU in all nine alternating comparisons, less wall time in eight; docs/BENCHMARKS.md).
 */
final class VectorRelaunch {
    static final String MODULE = "jdk.incubator.vector";
    static final String PROPERTY = "dequant4j.relaunch";
    /** Set on the second JVM: the pid of the first, which it watches. */
    static final String PARENT_PROPERTY = "dequant4j.relaunch.parent";
    /**
     * C2 for the kernels early, and waited for: until then they run the Vector API's Java fallback, many times
     * slower, on cores the compiler needs (0.5 CPU-s less on the 8-layer export, docs/BENCHMARKS.md); {@code quiet}
     * keeps HotSpot from announcing the commands on standard output.
     */
    static final List<String> EARLY_C2 = List.of("-XX:CompileCommand=quiet",
            "-XX:CompileCommand=CompileThresholdScaling,dev.dequant4j.internal.cpu.*::*,0.01",
            "-XX:CompileCommand=BackgroundCompilation,dev.dequant4j.internal.cpu.*::*,false");
    /**
     * The serial collector, unless the flags choose one: an export keeps little on the heap, but the garbage of the
     * Vector API's Java fallback before C2 compiles the kernels made G1 grow the heap to 0.5-1 GB resident, and the
     * serial collector stays at about a third of that with the same CPU time (docs/BENCHMARKS.md).
     */
    static final String SERIAL_GC = "-XX:+UseSerialGC";

    /** What the JVM prints first when it resolves the module: the one line the first JVM does not pass on. */
    static final String INCUBATOR_WARNING = "WARNING: Using incubator modules: " + MODULE;

    private VectorRelaunch() {}

    /** What the decision depends on, gathered from the running JVM (a record, so tests can vary each part). */
    record Jvm(boolean moduleLoaded, boolean moduleInImage, String relaunchProperty, Path codeSource,
               String classPath, Path javaHome, List<String> inputArguments, boolean hotspot) {
        static Jvm current() {
            Path source = null;
            try {
                var location = VectorRelaunch.class.getProtectionDomain().getCodeSource().getLocation();
                source = Path.of(location.toURI());
            } catch (Exception | LinkageError e) {
                // No code source (a custom class loader): not started from our jar.
            }
            List<String> input;
            try {
                input = java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments();
            } catch (LinkageError e) {
                // A runtime image without java.management: we cannot repeat the JVM's flags, so we do not restart.
                input = null;
            }
            return new Jvm(ModuleLayer.boot().findModule(MODULE).isPresent(),
                    ModuleFinder.ofSystem().find(MODULE).isPresent(), System.getProperty(PROPERTY), source,
                    System.getProperty("java.class.path"), Path.of(System.getProperty("java.home")), input,
                    !System.getProperty("java.vm.name", "").contains("OpenJ9"));
        }
    }

    /** The command that restarts this CLI with the Vector API, or empty when it should run as it is. */
    static Optional<List<String>> command(String[] args, Jvm jvm) {
        if (jvm.moduleLoaded() || !jvm.moduleInImage()
                || "false".equals(jvm.relaunchProperty()) || jvm.inputArguments() == null
                || jvm.codeSource() == null || !jvm.codeSource().toString().endsWith(".jar")
                || !Files.isRegularFile(jvm.codeSource()) || jvm.classPath() == null
                || !Path.of(jvm.classPath()).toAbsolutePath().equals(jvm.codeSource().toAbsolutePath())
                || !Main.computesAnExport(args)) {
            return Optional.empty();
        }
        List<String> cmd = new ArrayList<>();
        cmd.add(jvm.javaHome().resolve("bin").resolve("java").toString());
        for (String a : jvm.inputArguments()) {
            // A debugger agent would try to listen on the first JVM's port again, and fail.
            if (!a.startsWith("-agentlib:jdwp") && !a.startsWith("-Xrunjdwp") && !a.equals("-Xdebug")) {
                cmd.add(a);
            }
        }
        cmd.add("--add-modules=" + MODULE);
        if (jvm.hotspot()) {
            cmd.addAll(EARLY_C2);
            if (jvm.inputArguments().stream().noneMatch(VectorRelaunch::choosesCollector)) {
                cmd.add(SERIAL_GC);
            }
        }
        cmd.add("-D" + PROPERTY + "=false");
        cmd.add("-jar");
        cmd.add(jvm.codeSource().toString());
        cmd.addAll(List.of(args));
        return Optional.of(cmd);
    }

    /** {@code -XX:+UseG1GC}, {@code -XX:+UseZGC} and the like: a second choice would stop the JVM at start. */
    static boolean choosesCollector(String jvmFlag) {
        return jvmFlag.startsWith("-XX:+Use") && jvmFlag.endsWith("GC");
    }

    /**
     * Runs {@code cmd} with this process's standard streams and returns its exit code. A signal that ends this JVM
     * (Ctrl-C reaches both processes; a {@code kill} only this one) is passed on, and the child gets time to remove
     * its temporary output before this process exits. A {@code kill -9} of this process cannot be passed on: the
     * child watches this process itself ({@link #watchParent}).
     */
    static int run(List<String> cmd) throws IOException, InterruptedException {
        List<String> watched = new ArrayList<>(cmd);
        watched.add(1, "-D" + PARENT_PROPERTY + "=" + ProcessHandle.current().pid());
        ProcessBuilder pb = new ProcessBuilder(watched).inheritIO().redirectError(ProcessBuilder.Redirect.PIPE);
        // Their options are among the JVM's input arguments, which the command repeats already.
        pb.environment().remove("JAVA_TOOL_OPTIONS");
        pb.environment().remove("JDK_JAVA_OPTIONS");
        Process child = pb.start();
        Thread stderr = Thread.ofPlatform().daemon().name("dequant4j-relaunch-stderr").start(() ->
                copyStderr(child.getErrorStream(), new FileOutputStream(FileDescriptor.err)));
        Thread forward = new Thread(() -> {
            try {
                if (child.isAlive()) {
                    child.destroy();
                    child.waitFor(60, TimeUnit.SECONDS);
                }
                // the child's last words (why it stopped) before this JVM exits
                stderr.join(TimeUnit.SECONDS.toMillis(5));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "dequant4j-relaunch-stop");
        Runtime.getRuntime().addShutdownHook(forward);
        int code = child.waitFor();
        stderr.join();
        try {
            Runtime.getRuntime().removeShutdownHook(forward);
        } catch (IllegalStateException shuttingDown) {
            // The hook is running or about to: it finds the child gone and returns.
        }
        return code;
    }

    /**
     * Copies the second JVM's stderr to {@code to} as it comes (a progress line ends in a carriage return, not a line
     * break), except its first line if that is {@link #INCUBATOR_WARNING}: the JVM prints it before our code runs,
     * so it is first or not there (the JVM's own {@code Picked up ...} lines cannot precede it: the environment
     * variables that cause them are not passed on).
     */
    static void copyStderr(InputStream from, OutputStream to) {
        try (from) {
            byte[] warning = (INCUBATOR_WARNING + System.lineSeparator()).getBytes(StandardCharsets.US_ASCII);
            int matched = 0;
            int b = 0;
            while (matched < warning.length && (b = from.read()) == warning[matched]) {
                matched++;
            }
            if (matched < warning.length) {
                // not the warning: what was held back, then everything as it comes
                to.write(warning, 0, matched);
                if (b >= 0) {
                    to.write(b);
                }
                to.flush();
            }
            byte[] buf = new byte[8192];
            for (int n; (n = from.read(buf)) >= 0; ) {
                to.write(buf, 0, n);
                to.flush();
            }
        } catch (IOException e) {
            // This process's stderr is closed: nothing can be shown, the child's exit code still is passed on.
        }
    }

    /**
     * In the second JVM: when the first one ends without stopping this one (a {@code kill -9}, an out-of-memory
     * kill), exit as a signal would make it, so that the shutdown hooks cancel the export and remove its temporary
     * directory, instead of finishing it for a user who has been told it stopped. Nothing is printed: the terminal
     * may belong to someone else by then.
     */
    static void watchParent() {
        String pid = System.getProperty(PARENT_PROPERTY);
        if (pid == null) {
            return;
        }
        Optional<ProcessHandle> parent;
        try {
            parent = ProcessHandle.of(Long.parseLong(pid));
        } catch (NumberFormatException e) {
            return;
        }
        if (parent.isEmpty() || !parent.get().isAlive()) {
            System.exit(PARENT_GONE);
        }
        parent.get().onExit().thenRun(() -> System.exit(PARENT_GONE));
    }

    /** The exit code when the first JVM is gone: 128 + SIGKILL, as its own. */
    static final int PARENT_GONE = 137;
}

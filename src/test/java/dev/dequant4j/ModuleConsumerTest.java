package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.dequant4j.internal.Internals;
import java.io.File;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import java.util.spi.ToolProvider;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The library as a named module, seen from an application module that requires it: only {@code dev.dequant4j} is
 * readable, and the internal access bridge can be neither compiled against nor called reflectively.
 */
class ModuleConsumerTest {
    @TempDir
    Path tmp;

    /**
     * The compiled library as a module: target/classes once the build put the descriptor there (prepare-package),
     * before that a modular jar of target/classes and target/module-descriptor.
     */
    private Path library() throws URISyntaxException {
        Path classes = Path.of(Checkpoint.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        if (Files.exists(classes.resolve("module-info.class"))) {
            return classes;
        }
        Path jar = tmp.resolve("dequant4j.jar");
        StringWriter out = new StringWriter();
        int rc = ToolProvider.findFirst("jar").orElseThrow().run(new PrintWriter(out), new PrintWriter(out),
                "--create", "--file", jar.toString(), "-C", classes.resolveSibling("module-descriptor").toString(),
                "module-info.class", "-C", classes.toString(), "dev");
        assertEquals(0, rc, out.toString());
        return jar;
    }

    private static String javac(String... args) {
        StringWriter out = new StringWriter();
        int rc = ToolProvider.findFirst("javac").orElseThrow().run(new PrintWriter(out), new PrintWriter(out), args);
        return rc + "\n" + out;
    }

    private Path writeModule(String name, String main) throws IOException {
        return writeModule(name, "dev.dequant4j", main);
    }

    private Path writeModule(String name, String requires, String main) throws IOException {
        Path src = tmp.resolve(name);
        Files.createDirectories(src.resolve("consumer"));
        Files.writeString(src.resolve("module-info.java"), "module consumer { requires " + requires + "; }\n");
        Files.writeString(src.resolve("consumer/Main.java"), main);
        return src;
    }

    @Test
    void anApplicationModuleCannotCompileAgainstTheInternalBridge() throws Exception {
        Path src = writeModule("bridge", """
                package consumer;
                public class Main {
                    public static void main(String[] args) {
                        dev.dequant4j.internal.Internals.setCheckpointAccess(null);
                    }
                }
                """);
        Path lib = library();
        String r = javac("-d", tmp.resolve("bridge-out").toString(), "--module-path", lib.toString(),
                src.resolve("module-info.java").toString(), src.resolve("consumer/Main.java").toString());
        assertTrue(r.startsWith("1\n"), r);
        assertTrue(r.contains("package dev.dequant4j.internal is not visible"), r);
    }

    @Test
    void anApplicationModuleUsesTheApiAndIsRefusedTheBridgeReflectively() throws Exception {
        Path src = writeModule("app", """
                package consumer;
                import dev.dequant4j.Checkpoint;
                import java.nio.file.Path;
                public class Main {
                    public static void main(String[] args) throws Exception {
                        try (Checkpoint c = Checkpoint.open(Path.of(args[0]))) {
                            System.out.println("tensors " + c.tensors().size());
                            System.out.println("module " + Checkpoint.class.getModule().getName());
                            System.out.println("exports " + Checkpoint.class.getModule().getDescriptor().exports()
                                    .stream().map(e -> e.source()).sorted().toList());
                        }
                        Class<?> bridge = Class.forName("dev.dequant4j.internal.Internals");
                        try {
                            bridge.getMethod("setCheckpointAccess", bridge.getClasses()[0]).invoke(null, (Object) null);
                            System.out.println("bridge called");
                        } catch (IllegalAccessException e) {
                            System.out.println("bridge refused");
                        }
                    }
                }
                """);
        Path out = tmp.resolve("app-out");
        Path lib = library();
        String r = javac("-d", out.toString(), "--module-path", lib.toString(),
                src.resolve("module-info.java").toString(), src.resolve("consumer/Main.java").toString());
        assertTrue(r.startsWith("0\n"), r);
        Path java = Path.of(System.getProperty("java.home"), "bin", "java");
        Process p = new ProcessBuilder(java.toString(), "--enable-native-access=dev.dequant4j", "--module-path",
                lib + File.pathSeparator + out, "-m", "consumer/consumer.Main",
                Fixtures.checkpoint("llama-h64-nf4").toString()).redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), output);
        List<String> lines = output.lines().filter(l -> !l.startsWith("WARNING") && !l.contains("Vector API"))
                .toList();
        assertEquals(4, lines.size(), output);
        assertTrue(lines.get(0).matches("tensors [1-9][0-9]*"), output);
        assertEquals(List.of("module dev.dequant4j", "exports [dev.dequant4j]", "bridge refused"),
                lines.subList(1, 4));
    }

    /**
     * The library jar and its CUDA natives jar (a module of its own, as JavaCPP's natives are) on one module path
     * with JavaCPP and the CUDA presets: the application starts (with one module name for both jars it failed with
     * "Two versions of module dev.dequant4j"), and the CUDA backend finds its natives and the presets' in the other
     * modules. Where the build has the host emulation of the kernels (the cuda profile), the backend is usable
     * through it, so the JNI glue was loaded from the natives module.
     */
    @Test
    void theLibraryAndItsNativesJarShareTheModulePath() throws Exception {
        Path classes = Path.of(Checkpoint.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Path natives = classes.resolve("dev/dequant4j/internal/cuda/linux-x86_64");
        Path descriptors = classes.resolveSibling("natives-descriptor");
        assumeTrue(Files.exists(natives.resolve("libjnidequant4j_cuda.so"))
                && Files.exists(descriptors.resolve("module-info.class")), "the CUDA natives were not built (-Pcuda)");
        Path nativesJar = tmp.resolve("dequant4j-linux-x86_64.jar");
        StringWriter log = new StringWriter();
        int rc = ToolProvider.findFirst("jar").orElseThrow().run(new PrintWriter(log), new PrintWriter(log),
                "--create", "--file", nativesJar.toString(), "-C", descriptors.toString(), "module-info.class",
                "-C", classes.toString(), "dev/dequant4j/internal/cuda/linux-x86_64");
        assertEquals(0, rc, log.toString());
        List<String> modulePath = new ArrayList<>(List.of(libraryWithoutNatives(classes).toString(),
                nativesJar.toString()));
        for (String entry : System.getProperty("java.class.path").split(File.pathSeparator)) {
            if (entry.contains("org" + File.separator + "bytedeco")) {
                modulePath.add(entry);
            }
        }
        Path src = writeModule("cuda-app", "dev.dequant4j.linux.x86_64", """
                package consumer;
                import dev.dequant4j.Backend;
                public class Main {
                    public static void main(String[] args) {
                        System.out.println("natives " + ModuleLayer.boot().findModule("dev.dequant4j.linux.x86_64")
                                .map(m -> m.getDescriptor().toNameAndVersion()).orElse("absent"));
                        System.out.println("cuda " + Backend.CUDA.describe());
                    }
                }
                """);
        Path out = tmp.resolve("cuda-app-out");
        String r = javac("-d", out.toString(), "--module-path", String.join(File.pathSeparator, modulePath),
                src.resolve("module-info.java").toString(), src.resolve("consumer/Main.java").toString());
        assertTrue(r.startsWith("0\n"), r);
        modulePath.add(out.toString());

        Path emulation = classes.resolveSibling("native-build").resolve("emu");
        boolean emulated = Files.exists(emulation.resolve("libcudart.so.13"));
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "--enable-native-access=dev.dequant4j,org.bytedeco.javacpp",
                "-Dorg.bytedeco.javacpp.cachedir=" + tmp.resolve("javacpp-cache")));
        if (emulated) {
            cmd.addAll(List.of("-Dorg.bytedeco.javacpp.pathsFirst=true",
                    "-Dorg.bytedeco.javacpp.platform.linkpath=" + emulation,
                    "-Dorg.bytedeco.javacpp.platform.preloadpath=" + emulation));
        }
        cmd.addAll(List.of("--module-path", String.join(File.pathSeparator, modulePath), "-m", "consumer/consumer.Main"));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        if (emulated) {
            pb.environment().put("LD_LIBRARY_PATH", emulation.toString());
        }
        Process p = pb.start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), output);
        assertTrue(output.contains("natives dev.dequant4j.linux.x86_64"), output);
        String cuda = output.lines().filter(l -> l.startsWith("cuda ")).findFirst().orElseThrow();
        assertFalse(cuda.contains("not in this build") || cuda.contains("not on the class path"), cuda);
        if (emulated) {
            assertTrue(cuda.contains("host emulation"), cuda);
        }
    }

    /** The library module as an exploded directory without the natives, which the natives jar brings. */
    private Path libraryWithoutNatives(Path classes) throws IOException {
        Path dir = tmp.resolve("dequant4j-module");
        Files.createDirectories(dir);
        Files.copy(classes.resolveSibling("module-descriptor").resolve("module-info.class"),
                dir.resolve("module-info.class"));
        Path root = classes.resolve("dev");
        try (Stream<Path> files = Files.walk(root)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                String rel = classes.relativize(f).toString();
                if (!rel.contains("linux-x86_64") && !rel.startsWith("dev/dequant4j/cli/")) {
                    Files.createDirectories(dir.resolve(rel).getParent());
                    Files.copy(f, dir.resolve(rel));
                }
            }
        }
        return dir;
    }

    /** On the class path the bridge's package is reachable; the bridge itself still refuses every other caller. */
    @Test
    void theBridgeRefusesCallersOtherThanCheckpoint() {
        Internals.CheckpointAccess before = Internals.checkpoint();
        assertThrows(IllegalCallerException.class, () -> Internals.setCheckpointAccess(null));
        assertThrows(IllegalCallerException.class, () -> Internals.setCheckpointAccess(before));
        assertEquals(before, Internals.checkpoint());
    }
}

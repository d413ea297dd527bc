package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.jar.Attributes;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.jar.JarOutputStream;
import java.util.jar.Manifest;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code java -jar dequant4j-cli.jar export} restarts itself with the Vector API; nothing else does. */
class VectorRelaunchTest {
    @TempDir
    Path tmp;

    private VectorRelaunch.Jvm jvm(Path jar, boolean loaded, boolean inImage, String property, String classPath) {
        return new VectorRelaunch.Jvm(loaded, inImage, property, jar, classPath, Path.of("/opt/jdk"),
                List.of("-Xmx2g", "-agentlib:jdwp=transport=dt_socket,server=y,address=5005"), true);
    }

    private Path fakeJar() throws IOException {
        return Files.createFile(tmp.resolve("dequant4j-cli.jar"));
    }

    @Test
    void exportFromTheJarWithoutTheModuleRestartsWithIt() throws IOException {
        // the JVM's flags are passed on, except a debugger agent (it would find its port taken)
        Path jar = fakeJar();
        Optional<List<String>> cmd = VectorRelaunch.command(new String[] {"--debug", "export", "m", "--out", "o"},
                jvm(jar, false, true, null, jar.toString()));
        assertEquals(Optional.of(List.of("/opt/jdk/bin/java", "-Xmx2g", "--add-modules=jdk.incubator.vector",
                "-XX:CompileCommand=quiet",
                "-XX:CompileCommand=CompileThresholdScaling,dev.dequant4j.internal.cpu.*::*,0.01",
                "-XX:CompileCommand=BackgroundCompilation,dev.dequant4j.internal.cpu.*::*,false",
                "-XX:+UseSerialGC", "-Ddequant4j.relaunch=false", "-jar", jar.toString(), "--debug", "export", "m",
                "--out", "o")), cmd);
        List<String> openJ9 = VectorRelaunch.command(new String[] {"export", "m", "--out", "o"}, new VectorRelaunch.Jvm(false,
                true, null, jar, jar.toString(), Path.of("/opt/jdk"), List.of(), false)).orElseThrow();
        assertTrue(openJ9.stream().noneMatch(a -> a.startsWith("-XX:")), "HotSpot flags on HotSpot only");
        // a collector the user chose is kept: a second one would stop the JVM at start
        List<String> zgc = VectorRelaunch.command(new String[] {"export", "m", "--out", "o"}, new VectorRelaunch.Jvm(
                false, true, null, jar, jar.toString(), Path.of("/opt/jdk"), List.of("-XX:+UseZGC"), true))
                .orElseThrow();
        assertEquals(List.of("-XX:+UseZGC"), zgc.stream().filter(VectorRelaunch::choosesCollector).toList());
    }

    @Test
    void everythingElseRunsAsItIs() throws IOException {
        Path jar = fakeJar();
        String[] export = {"export", "m", "--out", "o"};
        String cp = jar.toString();
        assertEquals(Optional.empty(), VectorRelaunch.command(new String[] {"inspect", "m"},
                jvm(jar, false, true, null, cp)), "only export gains from the vector kernels");
        assertEquals(Optional.empty(), VectorRelaunch.command(new String[] {"--help"},
                jvm(jar, false, true, null, cp)));
        assertEquals(Optional.empty(), VectorRelaunch.command(export, jvm(jar, true, true, null, cp)),
                "the module is already there");
        assertEquals(Optional.empty(), VectorRelaunch.command(export, jvm(jar, false, false, null, cp)),
                "a runtime image without the module");
        assertEquals(Optional.empty(), VectorRelaunch.command(export, jvm(jar, false, true, "false", cp)),
                "turned off, and never twice");
        assertEquals(Optional.empty(), VectorRelaunch.command(export,
                jvm(jar, false, true, null, cp + java.io.File.pathSeparator + "other.jar")),
                "a class path of the caller's making");
        assertEquals(Optional.empty(), VectorRelaunch.command(export,
                jvm(tmp, false, true, null, tmp.toString())), "classes from a directory, as in tests and IDEs");
        assertEquals(Optional.empty(), VectorRelaunch.command(export, new VectorRelaunch.Jvm(false, true, null,
                jar, cp, Path.of("/opt/jdk"), null, true)), "the JVM's flags are unknown");
    }

    @Test
    void helpVersionAndUsageErrorsNeedNoSecondJvm() throws IOException {
        Path jar = fakeJar();
        VectorRelaunch.Jvm j = jvm(jar, false, true, null, jar.toString());
        for (String[] args : List.of(new String[] {"export", "--help"}, new String[] {"export", "-h", "m", "--out", "o"},
                new String[] {"export", "--version"}, new String[] {"--version"}, new String[] {"--help", "export"},
                new String[] {"export", "m"}, new String[] {"export", "m", "--out", "o", "--bogus"},
                new String[] {"export", "m", "--out", "o", "--dtype", "f8"},
                new String[] {"export", "m", "--out", "o", "--threads", "0"},
                new String[] {"export", "m", "--out", "o", "--memory", "lots"},
                new String[] {"export", "m", "--out", " "}, new String[] {"export", "m", "n", "--out", "o"},
                new String[] {"export", "m", "--out", "o", "--dry-run"})) {
            assertEquals(Optional.empty(), VectorRelaunch.command(args, j), String.join(" ", args));
        }
        assertTrue(VectorRelaunch.command(new String[] {"export", "m", "--out", "o", "--dtype", "BF16", "--backend",
                "CPU"}, j).isPresent(), "a valid export does restart");
    }

    /**
     * What {@code java -jar} prints and how many JVMs it took: each JVM started writes its own log file, named
     * after its pid ({@code -Xlog}, which the restart repeats as it repeats every JVM flag), so the count does not
     * depend on timing.
     */
    private Result runCountingJvms(Path jar, int jvms, String... args) throws Exception {
        Path logs = Files.createTempDirectory(tmp, "jvms");
        List<String> cmd = new java.util.ArrayList<>(List.of("-Xlog:gc:file=" + logs.resolve("jvm-%p.log"), "-jar",
                jar.toString()));
        cmd.addAll(List.of(args));
        Result r = runJar(jar, cmd.toArray(String[]::new));
        try (Stream<Path> s = Files.list(logs)) {
            assertEquals(jvms, s.count(), String.join(" ", args) + ": " + r.output());
        }
        return r;
    }

    @Test
    void helpAndUsageErrorsAreAnsweredByTheFirstJvmAndAnExportByASecondWithoutItsWarning() throws Exception {
        Path jar = cliJar();
        String model = Fixtures.checkpoint("llama-h64-nf4-dq").toString();
        String out = tmp.resolve("out").toString();
        Result help = runCountingJvms(jar, 1, "export", "--help");
        assertEquals(0, help.code());
        assertTrue(help.output().startsWith("Usage: dequant4j export"), help.output());
        assertEquals(0, runCountingJvms(jar, 1, "--version").code());
        assertEquals(2, runCountingJvms(jar, 1, "export", model, "--out", out, "--bogus").code());
        assertEquals(2, runCountingJvms(jar, 1, "export", model).code());
        Result badValue = runCountingJvms(jar, 1, "export", model, "--out", out, "--dtype", "f8");
        assertEquals(2, badValue.code());
        assertTrue(badValue.output().startsWith("error: Invalid value for option '--dtype'"), badValue.output());

        Result ok = runCountingJvms(jar, 2, "export", model, "--out", out, "--backend", "cpu");
        assertEquals(0, ok.code(), ok.output());
        assertTrue(ok.output().lines().anyMatch(l -> l.startsWith("exported 21 tensors")), ok.output());
        assertTrue(ok.output().lines().noneMatch(l -> l.contains("WARNING")), "no JVM warning line: " + ok.output());
    }

    @Test
    void theIncubatorWarningIsDroppedAndEverythingElsePassesAsItCame() {
        String w = VectorRelaunch.INCUBATOR_WARNING + System.lineSeparator();
        assertEquals("progress\r50%\rerror: x\n", copied(w + "progress\r50%\rerror: x\n"));
        assertEquals("", copied(w));
        assertEquals("WARNING: Using incubator modules: jdk.incubator.vector, jdk.incubator.other\n",
                copied("WARNING: Using incubator modules: jdk.incubator.vector, jdk.incubator.other\n"),
                "only the exact line");
        assertEquals("error: x\n" + w, copied("error: x\n" + w), "only as the first line");
        assertEquals("WARNING: Using", copied("WARNING: Using"), "a prefix at the end is kept");
    }

    private static String copied(String stderr) {
        java.io.ByteArrayOutputStream to = new java.io.ByteArrayOutputStream();
        VectorRelaunch.copyStderr(new java.io.ByteArrayInputStream(stderr.getBytes(StandardCharsets.UTF_8)), to);
        return to.toString(StandardCharsets.UTF_8);
    }

    /** An executable jar of the compiled CLI and picocli, like the shaded one that {@code mvn package} builds. */
    private Path cliJar() throws Exception {
        return cliJar(tmp.resolve("cli.jar"));
    }

    static Path cliJar(Path jar) throws Exception {
        Path classes = Path.of(Main.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Path picocli = Stream.of(System.getProperty("java.class.path").split(java.io.File.pathSeparator))
                .map(Path::of).filter(p -> p.getFileName().toString().startsWith("picocli")).findFirst()
                .orElseThrow();
        Manifest mf = new Manifest();
        mf.getMainAttributes().put(Attributes.Name.MANIFEST_VERSION, "1.0");
        mf.getMainAttributes().put(Attributes.Name.MAIN_CLASS, Main.class.getName());
        mf.getMainAttributes().putValue("Enable-Native-Access", "ALL-UNNAMED");
        try (JarOutputStream out = new JarOutputStream(Files.newOutputStream(jar), mf);
             Stream<Path> files = Files.walk(classes);
             JarFile pico = new JarFile(picocli.toFile())) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                out.putNextEntry(new JarEntry(classes.relativize(f).toString().replace('\\', '/')));
                Files.copy(f, out);
            }
            for (JarEntry e : java.util.Collections.list(pico.entries())) {
                if (!e.isDirectory() && !e.getName().startsWith("META-INF/")) {
                    out.putNextEntry(new JarEntry(e.getName()));
                    pico.getInputStream(e).transferTo(out);
                }
            }
        }
        return jar;
    }

    private record Result(int code, String output) {}

    private Result runJar(Path jar, String... args) throws Exception {
        List<String> cmd = new java.util.ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        cmd.addAll(List.of(args));
        Path log = tmp.resolve("child.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try (OutputStream ignored = p.getOutputStream()) {
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the CLI finished");
        }
        return new Result(p.exitValue(), Files.readString(log, StandardCharsets.UTF_8));
    }

    @Test
    void theJarExportsWithTheVectorKernelsAndPassesOnTheExitCode() throws Exception {
        Path jar = cliJar();
        Path model = Fixtures.checkpoint("llama-h64-nf4-dq");
        Path out = tmp.resolve("out");
        Result ok = runJar(jar, "-jar", jar.toString(), "export", model.toString(), "--out", out.toString(),
                "--backend", "cpu");
        assertEquals(0, ok.code(), ok.output());
        String kernels = Json.parseObject(Files.readAllBytes(out.resolve("dequant4j-manifest.json")))
                .getObject("tool").getString("cpu_kernels");
        assertTrue(kernels.startsWith("panama-"), "vector kernels in the restarted JVM, not " + kernels);

        Result bad = runJar(jar, "-jar", jar.toString(), "export", tmp.resolve("missing").toString(), "--out",
                tmp.resolve("out2").toString());
        assertEquals(1, bad.code(), bad.output());
        assertTrue(bad.output().lines().anyMatch(l -> l.startsWith("error: ") && l.contains("missing")),
                bad.output());

        Path scalarOut = tmp.resolve("out3");
        Result off = runJar(jar, "-Ddequant4j.relaunch=false", "-jar", jar.toString(), "export", model.toString(),
                "--out", scalarOut.toString(), "--backend", "cpu");
        assertEquals(0, off.code(), off.output());
        assertEquals("scalar", Json.parseObject(Files.readAllBytes(scalarOut.resolve("dequant4j-manifest.json")))
                .getObject("tool").getString("cpu_kernels"));
    }

    @Test
    void standardOutputHoldsOnlyTheJsonSummaryAndEnvironmentOptionsApplyOnce() throws Exception {
        Path jar = cliJar();
        Path out = tmp.resolve("out");
        ProcessBuilder pb = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-jar", jar.toString(), "export", Fixtures.checkpoint("llama-h64-nf4-dq").toString(), "--out",
                out.toString(), "--json").redirectError(tmp.resolve("err.log").toFile());
        pb.environment().put("JAVA_TOOL_OPTIONS", "-Ddequant4j.test.tool=1");
        Process p = pb.start();
        byte[] stdout = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        String err = Files.readString(tmp.resolve("err.log"));
        assertEquals(0, p.exitValue(), err);
        assertEquals(21, Json.parseObject(stdout).getLong("tensors"), "nothing but the summary on stdout");
        assertEquals(1, err.lines().filter(l -> l.startsWith("Picked up JAVA_TOOL_OPTIONS")).count(),
                "the restarted JVM gets the options as arguments, not from the environment again: " + err);
    }

    @Test
    void stoppingTheFirstJvmStopsTheExportAndLeavesNothing() throws Exception {
        Path out = tmp.resolve("out");
        Process parent = startSlowExport(out);
        ProcessHandle child = restartedJvmOnceWriting(parent);
        parent.destroy();
        assertTrue(parent.waitFor(60, TimeUnit.SECONDS));
        assertTrue(child.onExit().get(60, TimeUnit.SECONDS) != null);
        assertTrue(!child.isAlive(), "the restarted JVM stops with the first");
        assertTrue(!Files.exists(out), "the target must not appear");
        assertEquals(List.of(), temporaries(), "the restarted JVM removed its temporary directory");
    }

    /**
     * {@code kill -9} of the JVM the user started cannot be passed on to the restarted one, which must notice by
     * itself, stop, and remove its temporary directory: nothing appears, nothing is left.
     */
    @Test
    void aSigkillOfTheFirstJvmStopsTheExportAndLeavesNothing() throws Exception {
        Path out = tmp.resolve("out");
        Process parent = startSlowExport(out);
        ProcessHandle child = restartedJvmOnceWriting(parent);
        Process kill = new ProcessBuilder("kill", "-9", Long.toString(parent.pid())).inheritIO().start();
        assertEquals(0, kill.waitFor());
        assertTrue(parent.waitFor(60, TimeUnit.SECONDS));
        assertEquals(137, parent.exitValue(), "killed by SIGKILL");
        assertTrue(child.onExit().get(60, TimeUnit.SECONDS) != null);
        assertTrue(!child.isAlive(), "the restarted JVM stops when the first is killed");
        assertTrue(!Files.exists(out), "the target must not appear");
        assertEquals(List.of(), temporaries(), "the restarted JVM removed its temporary directory");
    }

    /** {@code java -jar} of a slow export (4 MiB budget, one thread) into {@code out}, its output in parent.log. */
    private Process startSlowExport(Path out) throws Exception {
        Path model = dev.dequant4j.internal.export.SyntheticModel.write(tmp.resolve("m"), 48, 1024, 1024,
                "{\"torch_dtype\": \"bfloat16\"}");
        return new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-jar", cliJar().toString(), "export", model.toString(), "--out", out.toString(), "--dtype", "f32",
                "--threads", "1", "--memory", "4MiB")
                .redirectErrorStream(true).redirectOutput(tmp.resolve("parent.log").toFile()).start();
    }

    /** Waits until the export's temporary directory exists; returns the one restarted JVM doing the work. */
    private ProcessHandle restartedJvmOnceWriting(Process parent) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (System.nanoTime() < deadline && parent.isAlive() && temporaries().isEmpty()) {
            Thread.sleep(20);
        }
        List<ProcessHandle> children = parent.children().toList();
        assertEquals(1, children.size(), "the export runs in one restarted JVM");
        assertTrue(parent.isAlive() && !temporaries().isEmpty(), Files.readString(tmp.resolve("parent.log")));
        return children.getFirst();
    }

    private List<Path> temporaries() throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.filter(p -> p.getFileName().toString().startsWith(".out.dequant4j-tmp-")).toList();
        }
    }
}

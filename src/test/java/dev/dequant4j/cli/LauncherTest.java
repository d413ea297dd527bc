package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code bin/dequant4j}, the launcher: one JVM with the Vector API kernels (no restart), and no JVM warning line.
 * It runs as installed: the script in {@code bin/}, the jar in {@code ../lib}.
 */
class LauncherTest {
    @TempDir
    Path tmp;

    private Path script;
    private Path logs;

    @BeforeEach
    void install() throws Exception {
        Path bin = Files.createDirectories(tmp.resolve("dist/bin"));
        script = Files.copy(Path.of("bin", "dequant4j"), bin.resolve("dequant4j"));
        VectorRelaunchTest.cliJar(Files.createDirectories(tmp.resolve("dist/lib")).resolve("dequant4j-cli.jar"));
        logs = Files.createDirectories(tmp.resolve("jvms"));
    }

    private record Result(int code, String out, String err, long jvms) {}

    /**
     * Runs the launcher; each JVM it starts writes a log file named after its pid ({@code -Xlog} through
     * {@code DEQUANT4J_OPTS}), so the count of JVMs does not depend on timing.
     */
    private Result launch(Map<String, String> env, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("bash", script.toString()));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectError(tmp.resolve("err.log").toFile());
        pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
        pb.environment().put("DEQUANT4J_OPTS", "-Xlog:gc:file=" + logs.resolve("jvm-%p.log"));
        pb.environment().remove("JAVA_TOOL_OPTIONS");
        pb.environment().putAll(env);
        Process p = pb.start();
        p.getOutputStream().close();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the launcher finished");
        long jvms;
        try (Stream<Path> s = Files.list(logs)) {
            jvms = s.count();
        }
        return new Result(p.exitValue(), out, Files.readString(tmp.resolve("err.log")), jvms);
    }

    @Test
    void exportsInOneJvmWithTheVectorKernelsAndNoWarningLine() throws Exception {
        Path out = tmp.resolve("out");
        Result r = launch(Map.of(), "export", Fixtures.checkpoint("llama-h64-nf4-dq").toString(), "--out",
                out.toString(), "--backend", "cpu");
        assertEquals(0, r.code(), r.err());
        assertEquals(1, r.jvms(), "no restart: " + r.err());
        assertTrue(r.out().startsWith("exported 21 tensors"), r.out());
        assertTrue((r.out() + r.err()).lines().noneMatch(l -> l.contains("WARNING")), r.err());
        String kernels = Json.parseObject(Files.readAllBytes(out.resolve("dequant4j-manifest.json")))
                .getObject("tool").getString("cpu_kernels");
        assertTrue(kernels.startsWith("panama-"), "the Vector API kernels, not " + kernels);
        assertTrue(gcLog().contains("Using Serial"), gcLog());
    }

    @Test
    void aCollectorChosenInTheOptionsIsTheOneUsed() throws Exception {
        Result r = launch(Map.of("DEQUANT4J_OPTS", "-XX:+UseParallelGC -Xlog:gc:file=" + logs.resolve("jvm-%p.log")),
                "export", Fixtures.checkpoint("llama-h64-nf4-dq").toString(), "--out", tmp.resolve("out").toString(),
                "--backend", "cpu");
        assertEquals(0, r.code(), r.err());
        assertTrue(gcLog().contains("Using Parallel"), gcLog());
    }

    /** The -Xlog:gc output of the one JVM the launcher started. */
    private String gcLog() throws Exception {
        try (Stream<Path> s = Files.list(logs)) {
            return Files.readString(s.findFirst().orElseThrow());
        }
    }

    @Test
    void theJvmsOwnLinesBeforeTheWarningAndEveryErrorLineStay() throws Exception {
        Result r = launch(Map.of("JAVA_TOOL_OPTIONS", "-Ddequant4j.test=1"), "export",
                tmp.resolve("missing").toString(), "--out", tmp.resolve("o").toString());
        assertEquals(1, r.code(), r.err());
        assertEquals(List.of("Picked up JAVA_TOOL_OPTIONS: -Ddequant4j.test=1",
                "error: " + tmp.resolve("missing") + ": no such file or directory"), r.err().lines().toList());

        Result usage = launch(Map.of(), "export", "m", "--out", tmp.resolve("o").toString(), "--bogus");
        assertEquals(2, usage.code(), usage.err());
        assertTrue(usage.err().startsWith("error: Unknown option: '--bogus'"), usage.err());

        Result badJvm = launch(Map.of("DEQUANT4J_OPTS", "-Xnonsense"));
        assertTrue(badJvm.code() != 0);
        assertTrue(badJvm.err().contains("-Xnonsense"), "the JVM's own error: " + badJvm.err());
    }
}

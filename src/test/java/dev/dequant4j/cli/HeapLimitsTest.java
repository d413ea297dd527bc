package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.OutputStream;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The class 9: a large header, export or config in a small heap ended in an OutOfMemoryError and its trace.
 * Each now ends in one {@code error:} line, from the real CLI jar in a JVM with a small {@code -Xmx}: refused before
 * parsing or planning when the estimate says it cannot fit (exit 1), or, for what the estimates miss, the CLI's
 * out-of-memory line (exit 5).
 */
class HeapLimitsTest {
    @TempDir
    Path tmp;

    private record Result(int code, List<String> lines) {}

    /** {@code java -Xmx<heap> -jar cli.jar args}; the output lines but the JVM's notice of the Vector API module. */
    private Result run(String heap, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx" + heap, "-jar", VectorRelaunchTest.cliJar(tmp.resolve("cli.jar")).toString()));
        cmd.addAll(List.of(args));
        Path log = tmp.resolve("child.log");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        try (OutputStream ignored = p.getOutputStream()) {
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "the CLI finished");
        }
        List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8).stream()
                .filter(l -> !l.startsWith("WARNING: Using incubator modules")).toList();
        return new Result(p.exitValue(), lines);
    }

    /** A model of {@code n} F16 scalars named {@code prefix + i}. */
    private Path model(String name, int n, String prefix) throws Exception {
        List<SafetensorsWriter.TensorData> tensors = new ArrayList<>();
        MemorySegment two = MemorySegment.ofArray(new byte[2]);
        for (int i = 0; i < n; i++) {
            tensors.add(new SafetensorsWriter.TensorData(new ShardedLayout.Spec(prefix + i, DType.F16, new long[] {1}),
                    two));
        }
        Path dir = tmp.resolve(name);
        SafetensorsWriter.write(dir, tensors, Long.MAX_VALUE, false);
        return dir;
    }

    private void assertNothingLeft(Path out) throws Exception {
        assertFalse(Files.exists(out), "no output");
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(List.of(), s.filter(p -> p.getFileName().toString().startsWith(".")).toList(),
                    "no temporary directory");
        }
    }

    @Test
    void aHeaderThatCannotFitIsRefusedBeforeItIsParsed() throws Exception {
        // 1,000 names of 10,000 characters: a 10 MB header, about 40 MiB to parse
        Path m = model("m", 1000, "n".repeat(10_000));
        Result r = run("32m", "inspect", m.toString());
        assertEquals(1, r.code(), r.lines().toString());
        assertEquals(1, r.lines().size(), r.lines().toString());
        String line = r.lines().getFirst();
        assertTrue(line.startsWith("error: " + m.resolve("model.safetensors") + ": its "), line);
        assertTrue(line.contains("-byte header needs about ") && line.contains(" MiB heap are free; give the JVM"
                + " more with -Xmx"), line);
    }

    @Test
    void anExportThatCannotFitIsRefusedBeforeAnythingIsWritten() throws Exception {
        Path m = model("m", 60_000, "model.layers.");
        Path out = tmp.resolve("out");
        Result r = run("64m", "export", m.toString(), "--out", out.toString());
        assertEquals(1, r.code(), r.lines().toString());
        assertEquals(1, r.lines().size(), r.lines().toString());
        assertTrue(r.lines().getFirst().startsWith("error: an export of 60000 tensors needs about "),
                r.lines().getFirst());
        assertNothingLeft(out);
    }

    /**
     * A real OutOfMemoryError: a config.json of 2,000,000 empty arrays is 6 MB, within the limits and the estimate
     * of 5 heap bytes per byte, but its tree takes about 30 per byte.
     */
    @Test
    void anOutOfMemoryErrorIsOneLineSayingHowToGiveMore() throws Exception {
        Path m = tmp.resolve("m");
        Files.createDirectories(m);
        Path fixture = Fixtures.checkpoint("llama-h64-nf4");
        Files.copy(fixture.resolve("model.safetensors"), m.resolve("model.safetensors"));
        Files.writeString(m.resolve("config.json"), "{\"a\":[" + "[],".repeat(2_000_000) + "[]]}");
        Path out = tmp.resolve("out");
        Result r = run("48m", "export", m.toString(), "--out", out.toString());
        assertEquals(Main.OUT_OF_MEMORY, r.code(), r.lines().toString());
        assertEquals(1, r.lines().size(), r.lines().toString());
        assertTrue(r.lines().getFirst().matches("error: out of memory: the Java heap is \\d+ MiB; give the JVM more"
                + " with -Xmx, e\\.g\\. .*-Xmx2g.*"), r.lines().getFirst());
        assertNothingLeft(out);
    }
}

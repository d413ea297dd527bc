package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Fixtures;
import dev.dequant4j.RawSafetensors;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** {@code dequant4j inspect}, run in-process through {@link Main#run}: output, exit codes and error lines. */
class InspectCommandTest {
    @TempDir
    Path dir;

    /** Exit code, stdout and stderr of one run. */
    record Run(int code, String out, String err) {
        List<String> errLines() {
            return err.lines().toList();
        }
    }

    static Run run(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Run(code, out.toString(), err.toString());
    }

    /** Data bytes of a safetensors file, from its length prefix. */
    private static long dataBytes(Path f) throws IOException {
        try (FileChannel ch = FileChannel.open(f)) {
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(b, 0);
            return ch.size() - 8 - b.flip().getLong();
        }
    }

    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    /** Every fixture checkpoint: table and JSON agree with each other and with the fixture's manifest. */
    @ParameterizedTest
    @MethodSource("checkpoints")
    void inspectsEveryFixtureCheckpoint(String name) throws IOException {
        Path ckpt = Fixtures.checkpoint(name);
        Run table = run("inspect", ckpt.toString());
        assertEquals(0, table.code(), table.err());
        assertEquals("", table.err());
        Run json = run("inspect", "--json", ckpt.toString());
        assertEquals(0, json.code(), json.err());
        assertEquals("", json.err());
        JsonObject doc = (JsonObject) Json.parse(json.out());

        JsonArray tensors = doc.getArray("tensors");
        List<String> lines = table.out().lines().toList();
        assertEquals(List.of("NAME", "KIND", "DTYPE", "SHAPE", "BLOCKSIZE", "DQ", "STORED"),
                Arrays.asList(lines.getFirst().split("\\s{2,}")));
        for (int i = 0; i < tensors.size(); i++) {
            JsonObject t = (JsonObject) tensors.get(i);
            String[] cells = lines.get(1 + i).split("\\s{2,}");
            assertEquals(7, cells.length, lines.get(1 + i));
            assertEquals(t.getString("name"), cells[0]);
            assertEquals(t.getString("kind"), cells[1]);
            assertEquals(t.getString("dtype"), cells[2]);
            assertEquals(t.getArray("shape").toJava().toString(), cells[3]);
            JsonValue bs = t.get("blocksize");
            assertEquals(bs.toJava() == null ? "-" : bs.toJava().toString(), cells[4]);
            JsonValue dq = t.get("double_quant");
            assertEquals(dq.toJava() == null ? "-" : dq == JsonBoolean.TRUE ? "yes" : "no", cells[5]);
            assertTrue(cells[6].startsWith(t.getString("stored_dtype") + " "), cells[6]);
        }
        assertEquals("", lines.get(1 + tensors.size()), "a blank line before the summary");

        // against the manifest: the quantized tensors are exactly its quantized linears
        JsonObject manifest = Json.readObject(Fixtures.root().resolve("manifest.json"), Json.MAX_FILE_BYTES)
                .getObject("checkpoints").getObject(name);
        Set<String> quantized = new TreeSet<>();
        for (JsonValue v : tensors.values()) {
            if (!((JsonObject) v).getString("kind").equals("PLAIN")) {
                quantized.add(((JsonObject) v).getString("name"));
            }
        }
        assertEquals(new TreeSet<>(manifest.getObject("tensors").keys()), quantized);

        JsonObject summary = doc.getObject("summary");
        long bytes = 0;
        List<String> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(ckpt)) {
            for (Path f : s.filter(p -> p.toString().endsWith(".safetensors")).sorted().toList()) {
                bytes += dataBytes(f);
                files.add(f.getFileName().toString());
            }
        }
        assertEquals(bytes, summary.getLong("bytes"));
        assertEquals(files, doc.getArray("files").toJava());
        assertTrue(summary.getBoolean("bitsandbytes", false));
        assertEquals(tensors.size(), summary.getLong("logical_tensors"));
        assertTrue(table.out().contains("\ntensors:   " + tensors.size() + " logical "), table.out());
        assertTrue(table.out().contains("\nbytes:     " + bytes + " ("), table.out());
        String bnbLine = lines.getLast();
        assertTrue(bnbLine.startsWith("bitsandbytes keys: "), bnbLine);
        assertFalse(bnbLine.contains("none"), bnbLine);
        String quantKey = manifest.getObject("quantization").getString("kind").equals("4bit") ? ".absmax x" : ".SCB x";
        assertTrue(bnbLine.contains(quantKey), bnbLine);
    }

    @Test
    void aPlainSafetensorsFileHasNoBitsandbytesKeys() {
        Path f = RawSafetensors.write(dir.resolve("plain.safetensors"), RawSafetensors.file(List.of(
                new RawSafetensors.Tensor("w", "F16", new long[] {2, 2}, new byte[8]),
                new RawSafetensors.Tensor("s", "I64", new long[] {}, new byte[8]))));
        Run r = run("inspect", f.toString());
        assertEquals(0, r.code(), r.err());
        List<String> lines = r.out().lines().toList();
        assertEquals(List.of("s", "PLAIN", "I64", "[]", "-", "-", "I64 8 B"), Arrays.asList(lines.get(1).split("\\s{2,}")));
        assertEquals(List.of("w", "PLAIN", "F16", "[2, 2]", "-", "-", "F16 8 B"), Arrays.asList(lines.get(2).split("\\s{2,}")));
        assertEquals("bitsandbytes keys: none (not a bitsandbytes checkpoint)", lines.getLast());
        assertTrue(r.out().contains("\ndtypes:    {F16=1, I64=1}\n"), r.out());
        JsonObject doc = (JsonObject) Json.parse(run("inspect", "--json", f.toString()).out());
        assertEquals(JsonBoolean.FALSE, doc.getObject("summary").get("bitsandbytes"));
        assertEquals(16, doc.getObject("summary").getLong("bytes"));
    }

    @Test
    void badInputExitsOneWithOneErrorLineNamingFileAndTensor() {
        Path f = RawSafetensors.write(dir.resolve("bad.safetensors"), RawSafetensors.file(
                RawSafetensors.header(RawSafetensors.entry("model.w", "F99", "[2]", 0, 8)), new byte[8]));
        for (boolean json : new boolean[] {false, true}) {
            Run r = json ? run("inspect", "--json", f.toString()) : run("inspect", f.toString());
            assertEquals(1, r.code());
            assertEquals(List.of("error: " + f + ": tensor 'model.w': unknown dtype 'F99' (not one of the safetensors "
                    + "dtypes)"), r.errLines());
            if (!json) {
                assertEquals("", r.out());
                continue;
            }
            JsonObject e = Json.parseObject(r.out().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                    .getObject("error");
            assertEquals("corrupt_input", e.getString("kind"));
            assertEquals(f.toString(), e.getString("file"));
            assertEquals("model.w", e.getString("tensor"));
            assertEquals(f + ": tensor 'model.w': unknown dtype 'F99' (not one of the safetensors dtypes)",
                    e.getString("message"));
        }
        Path missing = dir.resolve("missing");
        Run r = run("inspect", missing.toString());
        assertEquals(1, r.code());
        assertEquals(List.of("error: " + missing + ": no such file or directory"), r.errLines());

        Path lfs = dir.resolve("lfs");
        RawSafetensors.write(lfs.resolve("model.safetensors"),
                "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n".getBytes(StandardCharsets.US_ASCII));
        r = run("inspect", lfs.toString());
        assertEquals(1, r.code());
        assertEquals(List.of("error: " + lfs.resolve("model.safetensors")
                + ": this is a Git LFS pointer, not the weights: run git lfs pull"), r.errLines());
    }

    @Test
    void debugAddsTheStackTrace() {
        Path missing = dir.resolve("missing");
        for (String[] args : List.of(new String[] {"--debug", "inspect", missing.toString()},
                new String[] {"inspect", "--debug", missing.toString()})) {
            Run r = run(args);
            assertEquals(1, r.code());
            List<String> err = r.errLines();
            assertEquals("error: " + missing + ": no such file or directory", err.getFirst());
            assertTrue(err.size() > 3, r.err());
            assertTrue(err.get(1).startsWith("dev.dequant4j.Dequant4jException: "), err.get(1));
            assertTrue(err.stream().anyMatch(l -> l.trim().startsWith("at dev.dequant4j.Checkpoint.open(")), r.err());
        }
    }

    @Test
    void usageErrorsExitTwo() {
        for (String[] args : List.of(new String[] {}, new String[] {"inspect"}, new String[] {"inspect", "--bogus", "x"},
                new String[] {"frobnicate"}, new String[] {"inspect", "a", "b"})) {
            Run r = run(args);
            assertEquals(2, r.code(), String.join(" ", args) + ": " + r.err());
            assertEquals("", r.out());
            assertTrue(r.err().startsWith("error: "), r.err());
            assertTrue(r.errLines().getLast().startsWith("Try '"), r.err());
        }
    }

    @Test
    void errorLinesAreOneLineWhateverTheException() {
        assertEquals("IllegalStateException: a??b?c", Main.oneLine(new IllegalStateException("a\r\nb\tc")));
        assertEquals("x: y", Main.oneLine(new IllegalArgumentException("x: y")));
        assertEquals("NullPointerException", Main.oneLine(new NullPointerException()));
    }

    @Test
    void helpAndVersionExitZero() {
        Run help = run("inspect", "--help");
        assertEquals(0, help.code());
        assertTrue(help.out().startsWith("Usage: dequant4j inspect"), help.out());
        assertFalse(help.out().contains("?"), "help keeps its line breaks: " + help.out());
        assertTrue(help.out().lines().anyMatch(l -> l.matches(" +3 +The output exists.*")), help.out());
        Run top = run("--help");
        assertEquals(0, top.code());
        assertTrue(top.out().contains("inspect"), top.out());
        Run version = run("--version");
        assertEquals(0, version.code());
        assertTrue(version.out().startsWith("dequant4j "), version.out());
    }

    @Test
    void inspectsAdapterAndExpectedFilesAsPlainSafetensors() {
        for (Path f : List.of(Fixtures.adapter("h64-dora-qv").resolve("adapter_model.safetensors"),
                Fixtures.root().resolve("expected/checkpoints/llama-h64-mixed/expected_dequant.safetensors"))) {
            Run r = run("inspect", "--json", f.toString());
            assertEquals(0, r.code(), r.err());
            JsonObject doc = (JsonObject) Json.parse(r.out());
            assertEquals(JsonBoolean.FALSE, doc.getObject("summary").get("bitsandbytes"));
            Set<String> kinds = ((JsonArray) doc.get("tensors")).values().stream()
                    .map(t -> ((JsonObject) t).getString("kind")).collect(Collectors.toSet());
            assertEquals(Set.of("PLAIN"), kinds);
        }
    }

    private static final String JSONISH = "{}[]\",:0123456789-eUF ";

    /**
     * Fixture checkpoints with a few header bytes corrupted: inspect succeeds, or exits 1 with a single
     * {@code error:} line that names a file of the checkpoint; it never crashes or escapes with another exception.
     */
    @Test
    void corruptedFixturesFailWithOneLine() throws IOException {
        Random rnd = new Random(20261128);
        int failures = 0;
        for (int round = 0; round < 300; round++) {
            String name = checkpoints().get(round % checkpoints().size());
            Path src = Fixtures.checkpoint(name);
            Path copy = dir.resolve("c" + round);
            Files.createDirectory(copy);
            List<Path> shards = new ArrayList<>();
            try (Stream<Path> s = Files.list(src)) {
                for (Path p : s.toList()) {
                    Files.copy(p, copy.resolve(p.getFileName()));
                    if (p.toString().endsWith(".safetensors")) {
                        shards.add(copy.resolve(p.getFileName()));
                    }
                }
            }
            Path victim = shards.get(rnd.nextInt(shards.size()));
            byte[] b = Files.readAllBytes(victim);
            long headerEnd = 8 + ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            for (int i = 0; i < 1 + rnd.nextInt(3); i++) {
                int pos = 8 + rnd.nextInt((int) headerEnd - 8);
                b[pos] = (byte) JSONISH.charAt(rnd.nextInt(JSONISH.length()));
            }
            Files.write(victim, b);
            Run r = run("inspect", copy.toString());
            if (r.code() != 0) {
                failures++;
                assertEquals(1, r.code(), r.err());
                assertEquals(1, r.errLines().size(), r.err());
                assertTrue(r.err().startsWith("error: " + copy), r.err());
                assertFalse(r.err().matches("error: \\w+(Exception|Error): .*\\R?"), "not a bare exception: " + r.err());
            }
        }
        assertTrue(failures > 100, "most corruptions are detected: " + failures);
    }
}

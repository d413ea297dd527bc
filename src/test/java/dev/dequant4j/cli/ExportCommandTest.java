package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code dequant4j export} and {@code verify}, run in-process: output lines, exit codes and error lines. */
class ExportCommandTest {
    @TempDir
    Path tmp;

    private static String model() {
        return Fixtures.checkpoint("llama-h64-nf4-dq").toString();
    }

    @Test
    void summaryLinesAndAVerifiableOutput() {
        Path out = tmp.resolve("out");
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--adapter",
                Fixtures.adapter("h64-lora-r8").toString(), "--out", out.toString(), "--dtype", "f16");
        assertEquals(0, r.code(), r.err());
        List<String> lines = r.out().lines().toList();
        assertTrue(lines.get(0).startsWith("exported 21 tensors (209.5 kB) as F16 to " + out), lines.get(0));
        assertTrue(lines.get(0).endsWith(", backend cpu"), "CUDA neither asked for nor used: " + lines.get(0));
        assertFalse(lines.get(0).endsWith("?"), "the summary line ends with a line break, not a '?'");
        assertEquals("files: [model.safetensors, config.json, dequant4j-manifest.json]", lines.get(1));
        assertEquals("merged 14 tensors; largest relative changes:", lines.get(2));
        InspectCommandTest.Run v = InspectCommandTest.run("verify", out.toString());
        assertEquals(0, v.code(), v.err());
        assertEquals("ok: " + out + " matches its manifest", v.out().strip());
    }

    @Test
    void jsonSummaryParses() {
        Path out = tmp.resolve("out");
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--out", out.toString(), "--json",
                "--dtype", "bf16", "--threads", "1", "--max-shard-size", "100KB");
        assertEquals(0, r.code(), r.err());
        JsonObject o = Json.parseObject(r.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals("BF16", o.getString("dtype"));
        assertEquals(21, o.getLong("tensors"));
        assertEquals(21, o.getArray("tensor_stats").size());
        assertTrue(o.getArray("files").size() > 3, "several shards and an index");
        assertEquals(1, o.getLong("schema_version"));
        for (JsonValue t : o.getArray("tensor_stats").values()) {
            JsonValue rel = ((JsonObject) t).get("rel_delta_norm");
            assertTrue(rel instanceof JsonNumber || rel == JsonNull.NULL, "a number or null: " + rel);
        }
    }

    @Test
    void aFailedJsonRunPrintsOneErrorObjectWithTheLibrarysKind() throws Exception {
        Files.createDirectories(tmp.resolve("exists"));
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--out", tmp.resolve("exists").toString(),
                "--json");
        assertEquals(Main.OUTPUT_EXISTS, r.code());
        JsonObject o = Json.parseObject(r.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(List.of("schema_version", "error"), List.copyOf(o.keys()));
        JsonObject e = o.getObject("error");
        assertEquals("output_exists", e.getString("kind"));
        assertEquals(tmp.resolve("exists").toAbsolutePath().normalize().toString(), e.getString("file"));
        assertEquals(JsonNull.NULL, e.get("tensor"));
        assertEquals(tmp.resolve("exists") + ": output already exists (use --overwrite to replace it)",
                e.getString("message"));

        InspectCommandTest.Run usage = InspectCommandTest.run("export", model(), "--json", "--dtype", "f8", "--out",
                tmp.resolve("o").toString());
        assertEquals(2, usage.code());
        JsonObject u = Json.parseObject(usage.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals("usage", u.getObject("error").getString("kind"));
        InspectCommandTest.Run unknown = InspectCommandTest.run("export", model(), "--json", "--bogus");
        assertEquals(2, unknown.code());
        assertEquals("usage", Json.parseObject(unknown.out().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                .getObject("error").getString("kind"));
    }

    private List<Path> entries() throws Exception {
        try (java.util.stream.Stream<Path> s = Files.list(tmp)) {
            return s.sorted().toList();
        }
    }

    @Test
    void dryRunPrintsThePlanAndWritesNothing() throws Exception {
        Path out = tmp.resolve("new/out");
        String adapter = Fixtures.adapter("h64-lora-r8").toString();
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--adapter", adapter, "--out",
                out.toString(), "--max-shard-size", "100KB", "--dry-run");
        assertEquals(0, r.code(), r.err());
        assertEquals("", r.err(), "no progress");
        List<String> lines = r.out().lines().toList();
        assertTrue(lines.get(0).matches("would export 21 tensors \\(217\\.7 kB\\) as BF16 to " + java.util.regex.Pattern
                .quote(out.toAbsolutePath().toString()) + ", backend cpu; nothing written \\(--dry-run\\)"), lines.get(0));
        assertTrue(lines.contains("model-00003-of-00003.safetensors  16.5 kB   3"), r.out());
        assertTrue(lines.stream().anyMatch(l -> l.matches("model.layers.0.mlp.down_proj.weight +NF4 +BF16 +\\[64, 160] +1"
                + " +model-00001-of-00003.safetensors")), r.out());
        assertTrue(lines.stream().anyMatch(l -> l.startsWith(adapter) && l.endsWith("model.layers.1.mlp.up_proj.weight")),
                r.out());
        assertEquals(List.of(), entries(), "no output, parent or temporary directory");

        InspectCommandTest.Run j = InspectCommandTest.run("export", model(), "--adapter", adapter, "--out",
                out.toString(), "--max-shard-size", "100KB", "--dry-run", "--json");
        assertEquals(0, j.code(), j.err());
        JsonObject o = Json.parseObject(j.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(List.of("schema_version", "dry_run", "format", "gguf_type", "directory", "dtype", "tensors",
                "bytes", "backend", "backend_reason", "shards", "tensor_plan", "merges"), List.copyOf(o.keys()));
        assertEquals("safetensors", o.getString("format"));
        assertEquals(JsonNull.NULL, o.get("gguf_type"));
        assertEquals(1, o.getLong("schema_version"));
        assertEquals(JsonBoolean.TRUE, o.get("dry_run"));
        assertEquals(21, o.getLong("tensors"));
        assertEquals(21, o.getArray("tensor_plan").size());
        assertEquals(14, o.getArray("merges").size());
        long sum = 0;
        for (JsonValue s : o.getArray("shards").values()) {
            sum += ((JsonObject) s).getLong("bytes");
        }
        assertEquals(o.getLong("bytes"), sum);
        JsonObject down = (JsonObject) o.getArray("tensor_plan").values().get(3);
        assertEquals("model.layers.0.mlp.down_proj.weight", down.getString("name"));
        assertEquals("NF4", down.getString("source_kind"));
        assertEquals(1, down.getLong("merge_steps"));
        assertEquals("BF16", down.getString("type"));
        assertEquals(64 * 160 * 2, down.getLong("bytes"));
        assertEquals(List.of(), entries());

        InspectCommandTest.Run ok = InspectCommandTest.run("export", model(), "--out", out.toString(), "--dry-run",
                "--quiet");
        assertEquals(0, ok.code(), ok.err());
        assertEquals("", ok.out() + ok.err(), "--quiet: a check of the inputs only");
    }

    @Test
    void aGgufDryRunPrintsTheFilesPlanAndWritesNothing() throws Exception {
        Path model = dev.dequant4j.export.GgufExportTest.modelWithTokenizer(tmp.resolve("model"));
        Path out = tmp.resolve("new/out");
        String adapter = Fixtures.real().resolve("adapter-llama-lora").toString();
        InspectCommandTest.Run r = InspectCommandTest.run("export", model.toString(), "--adapter", adapter,
                "--format", "gguf", "--gguf-type", "q4_k_m", "--max-shard-size", "50KB", "--out", out.toString(),
                "--dry-run");
        assertEquals(0, r.code(), r.err());
        assertEquals("", r.err(), "no progress");
        List<String> lines = r.out().lines().toList();
        assertTrue(lines.get(0).matches("would export 21 tensors \\(.* kB\\) as GGUF Q4_K_M to " + java.util.regex
                .Pattern.quote(out.toAbsolutePath().toString()) + ", backend cpu; nothing written \\(--dry-run\\)"),
                lines.get(0));
        assertTrue(lines.get(1).matches("TENSOR +SOURCE +TYPE +SHAPE +BYTES +MERGES +FILE"), lines.get(1));
        assertTrue(lines.stream().anyMatch(l -> l.matches("blk\\.0\\.attn_q\\.weight +NF4 +Q5_0 +\\[64, 64] +2\\.8 kB"
                + " +1 +model-00001-of-0000\\d\\.gguf")), r.out());
        assertTrue(lines.stream().anyMatch(l -> l.matches("model-00001-of-0000\\d\\.gguf +.* kB +\\d+")), r.out());
        assertEquals(List.of(tmp.resolve("model")), entries(), "no output, parent or temporary directory");

        InspectCommandTest.Run j = InspectCommandTest.run("export", model.toString(), "--format", "gguf", "--out",
                out.toString(), "--dry-run", "--json");
        assertEquals(0, j.code(), j.err());
        JsonObject o = Json.parseObject(j.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(1, o.getLong("schema_version"));
        assertEquals(JsonBoolean.TRUE, o.get("dry_run"));
        assertEquals("gguf", o.getString("format"));
        assertEquals("BF16", o.getString("gguf_type"), "the model's own dtype");
        assertEquals(1, o.getArray("shards").size());
        JsonObject file = (JsonObject) o.getArray("shards").values().getFirst();
        assertEquals("model.gguf", file.getString("file"));
        assertEquals(o.getLong("bytes"), file.getLong("bytes"));
        JsonObject output = (JsonObject) o.getArray("tensor_plan").values().getFirst();
        assertEquals("output.weight", output.getString("name"));
        assertEquals("BF16", output.getString("type"));
        assertEquals(List.of(64L, 256L).toString(), output.getArray("ne").values().stream()
                .map(v -> ((JsonNumber) v).longValue()).toList().toString());
        assertEquals(List.of(tmp.resolve("model")), entries());

        Path bare = tmp.resolve("bare");
        Files.createDirectories(bare);
        Files.copy(model.resolve("config.json"), bare.resolve("config.json"));
        Files.copy(model.resolve("model.safetensors"), bare.resolve("model.safetensors"));
        InspectCommandTest.Run dry = InspectCommandTest.run("export", bare.toString(), "--format", "gguf", "--out",
                tmp.resolve("o").toString(), "--dry-run");
        InspectCommandTest.Run real = InspectCommandTest.run("export", bare.toString(), "--format", "gguf", "--out",
                tmp.resolve("o").toString());
        assertEquals(1, dry.code());
        assertEquals(1, dry.errLines().size(), dry.err());
        assertTrue(dry.err().contains("no tokenizer.json or tokenizer.model"), dry.err());
        assertEquals(real.err(), dry.err());
        assertEquals(real.code(), dry.code());
        assertEquals("", dry.out());
        assertFalse(Files.exists(tmp.resolve("o")));
    }

    @Test
    void dryRunChecksAsTheExportDoes() throws Exception {
        InspectCommandTest.Run bad = InspectCommandTest.run("export", model(), "--adapter",
                Fixtures.adapter("h48-lora-r4").toString(), "--out", tmp.resolve("o").toString(), "--dry-run");
        assertEquals(1, bad.code());
        assertEquals(1, bad.errLines().size(), bad.err());
        assertTrue(bad.err().startsWith("error: "), bad.err());
        assertEquals("", bad.out());
        Files.createDirectories(tmp.resolve("exists"));
        InspectCommandTest.Run exists = InspectCommandTest.run("export", model(), "--out",
                tmp.resolve("exists").toString(), "--dry-run", "--json");
        assertEquals(3, exists.code());
        assertEquals("output_exists", Json.parseObject(exists.out().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                .getObject("error").getString("kind"));
        assertEquals(List.of(tmp.resolve("exists")), entries());
    }

    @Test
    void quietPrintsNothingOnSuccess() {
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--out", tmp.resolve("o").toString(),
                "--quiet");
        assertEquals(0, r.code(), r.err());
        assertEquals("", r.out());
        assertEquals("", r.err());
    }

    @Test
    void verifyJsonListsOneProblemPerBrokenFile() throws Exception {
        Path out = tmp.resolve("out");
        assertEquals(0, InspectCommandTest.run("export", model(), "--out", out.toString()).code());
        InspectCommandTest.Run ok = InspectCommandTest.run("verify", out.toString(), "--json");
        assertEquals(0, ok.code(), ok.err());
        JsonObject good = Json.parseObject(ok.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(JsonBoolean.TRUE, good.get("ok"));
        assertEquals(0, good.getArray("problems").size());
        Files.write(out.resolve("model.safetensors"), new byte[] {0}, StandardOpenOption.APPEND);
        InspectCommandTest.Run bad = InspectCommandTest.run("verify", out.toString(), "--json");
        assertEquals(1, bad.code());
        JsonObject o = Json.parseObject(bad.out().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(JsonBoolean.FALSE, o.get("ok"));
        assertEquals(1, o.getArray("problems").size(), o.toString());
        assertEquals(1, bad.errLines().size(), bad.err());

        InspectCommandTest.Run none = InspectCommandTest.run("verify", tmp.toString(), "--json");
        assertEquals(1, none.code());
        assertEquals("invalid_request", Json.parseObject(none.out().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                .getObject("error").getString("kind"));
    }

    @Test
    void usageErrorsExitTwoBadInputOneAndAnExistingOutputThree() throws Exception {
        InspectCommandTest.Run bad = InspectCommandTest.run("export", model(), "--out", tmp.resolve("o").toString(),
                "--dtype", "f8");
        assertEquals(2, bad.code());
        assertEquals("error: Invalid value for option '--dtype': f16, bf16 or f32, not 'f8'", bad.errLines().get(0));

        Files.createDirectories(tmp.resolve("exists"));
        InspectCommandTest.Run exists = InspectCommandTest.run("export", model(), "--out",
                tmp.resolve("exists").toString());
        assertEquals(3, exists.code());
        assertEquals("error: " + tmp.resolve("exists") + ": output already exists (use --overwrite to replace it)",
                exists.err().strip());

        InspectCommandTest.Run missing = InspectCommandTest.run("export", model());
        assertEquals(2, missing.code());
        assertTrue(missing.err().startsWith("error: Missing required option: '--out=DIR'"), missing.err());

        InspectCommandTest.Run absent = InspectCommandTest.run("export", tmp.resolve("absent").toString(), "--out",
                tmp.resolve("o").toString());
        assertEquals(1, absent.code(), "a missing input is bad input, though its kind is IO: " + absent.err());
        Path corrupt = Files.write(tmp.resolve("corrupt.safetensors"), new byte[] {1, 2, 3});
        assertEquals(1, InspectCommandTest.run("export", corrupt.toString(), "--out", tmp.resolve("o").toString())
                .code());
    }

    /** The table that --help and the README document, kind by kind. */
    @Test
    void everyKindOfFailureHasItsDocumentedExitCode() {
        java.util.Map<Dequant4jException.Kind, Integer> documented = new java.util.EnumMap<>(Map.of(
                Kind.CORRUPT_INPUT, 1, Kind.UNSUPPORTED_INPUT, 1, Kind.ADAPTER_MISMATCH, 1, Kind.NON_FINITE, 1,
                Kind.IO, 1, Kind.INVALID_REQUEST, 1, Kind.OUTPUT_EXISTS, 3, Kind.BACKEND, 4, Kind.CANCELLED, 130));
        assertEquals(java.util.EnumSet.allOf(Kind.class), documented.keySet(), "every kind is in the table");
        documented.forEach((kind, code) -> assertEquals(code, Main.exitCode(kind), kind.name()));
        documented.forEach((kind, code) -> assertEquals(code, Main.exitCode(new Dequant4jException(kind, "x")),
                kind.name()));
        assertEquals(5, Main.exitCode(new IllegalStateException("wrapped", new OutOfMemoryError())));
        assertEquals(2, Main.exitCode(new IllegalArgumentException("a bad option value")));
        assertEquals(6, Main.exitCode(new NullPointerException()), "a bug is neither bad input nor usage");
        String help = InspectCommandTest.run("export", "--help").out();
        for (int code : new int[] {0, 1, 2, 3, 4, 5, 6, 130}) {
            assertTrue(help.lines().anyMatch(l -> l.matches(" +" + code + " +[A-Z].*")), code + " in --help: " + help);
        }
    }

    /** An out-of-memory failure keeps --json's promise of one object on stdout, beside its one stderr line. */
    @Test
    void outOfMemoryUnderJsonIsOneErrorObject() {
        java.io.StringWriter out = new java.io.StringWriter();
        java.io.StringWriter err = new java.io.StringWriter();
        assertEquals(Main.OUT_OF_MEMORY, Main.outOfMemory(new java.io.PrintWriter(out), new java.io.PrintWriter(err),
                true));
        assertEquals(1, err.toString().lines().count(), err.toString());
        assertTrue(err.toString().startsWith("error: out of memory: the Java heap is "), err.toString());
        JsonObject e = Json.parseObject(out.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8))
                .getObject("error");
        assertEquals("out_of_memory", e.getString("kind"));
        assertEquals(err.toString().strip(), "error: " + e.getString("message"));

        java.io.StringWriter plain = new java.io.StringWriter();
        Main.outOfMemory(new java.io.PrintWriter(plain), new java.io.PrintWriter(new java.io.StringWriter()), false);
        assertEquals("", plain.toString(), "nothing on stdout without --json");
    }

    @Test
    void cudaWithoutAUsableGpuIsOneErrorLine() {
        Assumptions.assumeFalse(Backend.CUDA.isAvailable(), "a usable GPU is present");
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--out", tmp.resolve("o").toString(),
                "--backend", "cuda");
        assertEquals(Main.BACKEND, r.code());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().startsWith("error: --backend cuda is not usable: "), r.err());
        assertFalse(Files.exists(tmp.resolve("o")));
    }

    @Test
    void verifyReportsAChangedByteAndExitsOne() throws Exception {
        Path out = tmp.resolve("out");
        assertEquals(0, InspectCommandTest.run("export", model(), "--out", out.toString()).code());
        try (FileChannel ch = FileChannel.open(out.resolve("config.json"), StandardOpenOption.WRITE)) {
            ch.write(java.nio.ByteBuffer.wrap(new byte[] {' '}), 0);
        }
        InspectCommandTest.Run v = InspectCommandTest.run("verify", out.toString());
        assertEquals(1, v.code());
        assertTrue(v.err().startsWith("error: " + out.resolve("config.json") + ": sha256 "), v.err());
    }

    @Test
    void ggufExportWritesModelGgufThatVerifies() {
        Path out = tmp.resolve("gguf");
        Path model = dev.dequant4j.export.GgufExportTest.modelWithTokenizer(tmp.resolve("model"));
        InspectCommandTest.Run r = InspectCommandTest.run("export", model.toString(), "--out", out.toString(),
                "--format", "gguf", "--gguf-type", "q8_0");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().lines().toList().get(0).startsWith("exported 21 tensors (136.4 kB) as GGUF Q8_0 to "),
                r.out());
        assertEquals("files: [model.gguf, dequant4j-manifest.json]", r.out().lines().toList().get(1));
        InspectCommandTest.Run v = InspectCommandTest.run("verify", out.toString());
        assertEquals(0, v.code(), v.err());
    }

    @Test
    void aGgufTypeNeedsTheGgufFormat() {
        Path out = tmp.resolve("gguf");
        InspectCommandTest.Run noFormat = InspectCommandTest.run("export", model(), "--out", out.toString(),
                "--gguf-type", "f16");
        assertEquals(2, noFormat.code());
        assertTrue(noFormat.err().contains("--gguf-type needs --format gguf"), noFormat.err());
        InspectCommandTest.Run bad = InspectCommandTest.run("export", model(), "--out", out.toString(), "--format",
                "gguf", "--gguf-type", "q3_k");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("Invalid value for option '--gguf-type'"), bad.err());
        assertFalse(Files.exists(out));
    }
}

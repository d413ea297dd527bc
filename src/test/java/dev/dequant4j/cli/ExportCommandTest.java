package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
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
        assertEquals(1, r.code());
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
    void usageErrorsExitTwoAndBadInputOne() throws Exception {
        InspectCommandTest.Run bad = InspectCommandTest.run("export", model(), "--out", tmp.resolve("o").toString(),
                "--dtype", "f8");
        assertEquals(2, bad.code());
        assertEquals("error: --dtype must be f16, bf16 or f32, not 'f8'", bad.err().strip());

        Files.createDirectories(tmp.resolve("exists"));
        InspectCommandTest.Run exists = InspectCommandTest.run("export", model(), "--out",
                tmp.resolve("exists").toString());
        assertEquals(1, exists.code());
        assertEquals("error: " + tmp.resolve("exists") + ": output already exists (use --overwrite to replace it)",
                exists.err().strip());

        InspectCommandTest.Run missing = InspectCommandTest.run("export", model());
        assertEquals(2, missing.code());
        assertTrue(missing.err().startsWith("error: Missing required option: '--out=DIR'"), missing.err());
    }

    @Test
    void cudaWithoutAUsableGpuIsOneErrorLine() {
        Assumptions.assumeFalse(Backend.CUDA.isAvailable(), "a usable GPU is present");
        InspectCommandTest.Run r = InspectCommandTest.run("export", model(), "--out", tmp.resolve("o").toString(),
                "--backend", "cuda");
        assertEquals(1, r.code());
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
}

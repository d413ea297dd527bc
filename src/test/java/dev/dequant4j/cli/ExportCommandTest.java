package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
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
        assertEquals("error: " + tmp.resolve("exists") + ": output already exists (pass --overwrite to replace it)",
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
        assertTrue(r.err().startsWith("error: --backend cuda: "), r.err());
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

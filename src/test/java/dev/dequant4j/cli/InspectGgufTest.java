package dev.dequant4j.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.internal.gguf.GgmlType;
import dev.dequant4j.internal.gguf.GgufMetadata;
import dev.dequant4j.internal.gguf.GgufWriter;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonObject;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code inspect} on .gguf files written by gguf-py, and on broken and hostile ones. */
class InspectGgufTest {
    @TempDir
    Path dir;

    private static Path fixture(String name) throws URISyntaxException {
        return Path.of(InspectGgufTest.class.getResource("/fixtures/gguf/container/" + name).toURI());
    }

    @Test
    void tableListsMetadataAndTensors() throws Exception {
        InspectCommandTest.Run r = InspectCommandTest.run("inspect", fixture("all-types.gguf").toString());
        assertEquals(0, r.code(), r.err());
        List<String> lines = r.out().lines().toList();
        assertTrue(row(lines, "t.uint64").matches("t\\.uint64 +UINT64 +18000000000000000000"), r.out());
        assertTrue(row(lines, "t.array.string").matches("t\\.array\\.string +ARRAY\\[STRING] +\\[\"a\", \"\", \"ünï\"]"));
        assertTrue(row(lines, "t.string").matches("t\\.string +STRING +\"héllo . wörld\""), row(lines, "t.string"));
        assertTrue(row(lines, "q8_0").matches("q8_0 +Q8_0 +\\[64, 2] +136 B +128"), row(lines, "q8_0"));
        assertTrue(r.out().contains("format:    GGUF v3, alignment 32, data at byte 1056"), r.out());
        assertTrue(r.out().contains("tensors:   7 {BF16=1, F16=1, F32=2, I32=1, Q4_K=1, Q8_0=1}, 492 bytes"), r.out());
    }

    private static String row(List<String> lines, String first) {
        return lines.stream().filter(l -> l.startsWith(first + " ")).findFirst().orElse("(no row " + first + ")");
    }

    @Test
    void jsonHasEveryValueExactly() throws Exception {
        InspectCommandTest.Run r = InspectCommandTest.run("inspect", "--json", fixture("all-types.gguf").toString());
        assertEquals(0, r.code(), r.err());
        JsonObject root = (JsonObject) Json.parse(r.out());
        assertEquals("gguf", root.getString("format"));
        JsonArray metadata = root.getArray("metadata");
        assertEquals("18000000000000000000", entry(metadata, "t.uint64").get("value").toString());
        assertEquals("[0.5,-1.0,\"inf\"]", Json.write(entry(metadata, "t.array.float32").get("value"),
                Json.Style.COMPACT));
        assertEquals("[1,18446744073709551615]", Json.write(entry(metadata, "t.array.uint64").get("value"),
                Json.Style.COMPACT));
        assertEquals("UINT8", entry(metadata, "t.array.uint8").getString("element_type"));
        assertEquals(7, root.getArray("tensors").size());
    }

    private static JsonObject entry(JsonArray metadata, String key) {
        for (int i = 0; i < metadata.size(); i++) {
            JsonObject o = (JsonObject) metadata.get(i);
            if (o.getString("key").equals(key)) {
                return o;
            }
        }
        throw new AssertionError(key);
    }

    @Test
    void brokenAndHostileFilesGetOneLine() throws Exception {
        Path cut = dir.resolve("cut.gguf");
        byte[] all = Files.readAllBytes(fixture("all-types.gguf"));
        Files.write(cut, Arrays.copyOf(all, 1500));
        InspectCommandTest.Run r = InspectCommandTest.run("inspect", cut.toString());
        assertEquals(1, r.code());
        assertEquals(List.of("error: " + cut + ": file is 1500 bytes but its tensors need 1604 (truncated?)"),
                r.errLines());

        Path hostile = dir.resolve("hostile.gguf");
        GgufMetadata m = new GgufMetadata().putString("evil\u001b[2J", "line\rforged\u001b[8m").putString("long",
                "x".repeat(10_000));
        GgufWriter w = new GgufWriter(m, List.of(new GgufWriter.Planned("t\u001b]0;title\u0007", new long[] {2},
                GgmlType.F32)));
        try (FileChannel ch = FileChannel.open(hostile, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            w.writeTo(ch, List.of(ByteBuffer.allocate(8)));
        }
        r = InspectCommandTest.run("inspect", hostile.toString());
        assertEquals(0, r.code(), r.err());
        assertFalse(r.out().chars().anyMatch(c -> c == 0x1b || c == '\r' || c == 7), r.out());
        assertTrue(r.out().contains("evil?[2J"), r.out());
        assertTrue(r.out().lines().allMatch(l -> l.length() < 400), "a 10,000-character value is cut in the table");
        r = InspectCommandTest.run("inspect", "--json", hostile.toString());
        assertTrue(r.out().contains("\"evil\\u001b[2J\""), r.out());
    }

    @Test
    void notGgufFallsBackToSafetensors() throws IOException {
        Path f = dir.resolve("x.gguf");
        Files.writeString(f, "GGU");
        InspectCommandTest.Run r = InspectCommandTest.run("inspect", f.toString());
        assertEquals(1, r.code());
        assertEquals(1, r.errLines().size(), r.err());
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code dequant4j verify} on an export from elsewhere: its manifest is untrusted. File names with control characters
 * (a forged line of output), a NUL (an invalid path) or 100,000 characters give one short problem line each; a file
 * listed many times costs one header parse; a value of the wrong type is named in the manifest's terms.
 */
class HostileManifestTest {
    @TempDir
    Path tmp;

    private Path out;
    private String manifest;

    @BeforeEach
    void export() throws IOException {
        out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4"))) {
            Export.of(c).to(out);
        }
        manifest = Files.readString(out.resolve(Manifest.FILE_NAME));
    }

    private List<String> verifyWithName(String jsonName) throws IOException {
        Files.writeString(out.resolve(Manifest.FILE_NAME),
                manifest.replace("\"name\": \"model.safetensors\"", "\"name\": \"" + jsonName + "\""));
        List<String> problems = Manifest.verify(out);
        for (String problem : problems) {
            assertEquals(1, problem.lines().count(), problem);
        }
        // the file and its tensors are then unaccounted for: the first two lines are the ones about the name
        return problems.subList(0, 2);
    }

    private String mf() {
        return out.resolve(Manifest.FILE_NAME).toString();
    }

    /** The fuzzer's finding (ParsersFuzzTestInputs/manifest/crash-383878cb...): a carriage return in a name. */
    @Test
    void controlCharactersInANameCannotForgeALine() throws IOException {
        assertEquals(List.of(mf() + ": file name \"a??ok: all files verified/\" is not a plain file name",
                        out.resolve("model.safetensors") + ": safetensors file not in the manifest"),
                verifyWithName("a\\r\\nok: all files verified/"));
    }

    @Test
    void nulInANameIsNotAPlainFileName() throws IOException {
        assertEquals(List.of(mf() + ": file name \"model.safetensors?\" is not a plain file name",
                        out.resolve("model.safetensors") + ": safetensors file not in the manifest"),
                verifyWithName("model.safetensors\\u0000"));
    }

    @Test
    void longNameIsCut() throws IOException {
        String name = "n".repeat(100_000) + "/";
        assertEquals(List.of(mf() + ": file name \"" + Json.abbreviate(name, 100) + "\" is not a plain file name",
                        out.resolve("model.safetensors") + ": safetensors file not in the manifest"),
                verifyWithName(name));
    }

    /** The manifest with {@code key} replaced by {@code value}. */
    private void rewrite(String key, JsonValue value) throws IOException {
        Path mf = out.resolve(Manifest.FILE_NAME);
        Map<String, JsonValue> m = new LinkedHashMap<>(Json.readObject(mf, Json.MAX_FILE_BYTES).members());
        m.put(key, value);
        Files.writeString(mf, Json.write(new JsonObject(m), Json.Style.PYTHON_INDENT2));
    }

    private JsonArray array(String key) throws IOException {
        return Json.readObject(out.resolve(Manifest.FILE_NAME), Json.MAX_FILE_BYTES).getArray(key);
    }

    /** Verifies, counting the safetensors files opened. */
    private List<String> verifyCounting(Path dir, AtomicInteger parses) {
        return Manifest.verify(dir, p -> {
            parses.incrementAndGet();
            return SafetensorsFile.open(p);
        });
    }

    /**
     * The class 7: 40 entries of one shard re-read its header 40 times (23 s for a 200k-tensor shard). A hard
     * link to it, listed under its own name, is the same file too.
     */
    @Test
    void aFileListedManyTimesHasItsHeaderParsedOnce() throws IOException {
        Files.createLink(out.resolve("copy.safetensors"), out.resolve("model.safetensors"));
        List<JsonValue> files = new ArrayList<>(array("files").values());
        JsonObject model = files.stream().map(JsonObject.class::cast)
                .filter(f -> f.getString("name").equals("model.safetensors")).findFirst().orElseThrow();
        for (int i = 0; i < 40; i++) {
            files.add(model);
        }
        Map<String, JsonValue> copy = new LinkedHashMap<>(model.members());
        copy.put("name", new JsonString("copy.safetensors"));
        files.add(new JsonObject(copy));
        rewrite("files", new JsonArray(files));

        AtomicInteger parses = new AtomicInteger();
        assertEquals(List.of(), verifyCounting(out, parses));
        assertEquals(1, parses.get());
    }

    /** The index check uses the headers already parsed: each shard, listed twice, is parsed once in all. */
    @Test
    void shardsAreParsedOnceForTheFilesAndTheIndex() throws IOException {
        out = tmp.resolve("sharded");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4"))) {
            Export.of(c).maxShardBytes(100_000).to(out);
        }
        List<JsonValue> files = new ArrayList<>(array("files").values());
        files.addAll(List.copyOf(files));
        rewrite("files", new JsonArray(files));
        long shards;
        try (var s = Files.list(out)) {
            shards = s.filter(p -> p.toString().endsWith(".safetensors")).count();
        }

        AtomicInteger parses = new AtomicInteger();
        assertEquals(List.of(), verifyCounting(out, parses));
        assertEquals(shards, parses.get());
        assertFalse(shards < 2, "the export is sharded");
    }

    /** The issue: "JsonString cannot be cast to ...JsonObject" named Java classes; the line names the entry. */
    @Test
    void aStringWhereAnEntryBelongsIsNamedInTheManifestsTerms() throws IOException {
        List<JsonValue> files = new ArrayList<>(array("files").values());
        files.set(1, new JsonString("model.safetensors"));
        rewrite("files", new JsonArray(files));
        assertEquals(List.of(mf() + ": malformed manifest: files[1]: must be an object, not the string"
                + " \"model.safetensors\""), Manifest.verify(out));
    }

    @Test
    void aShapeThatIsNotIntegersIsNamedInTheManifestsTerms() throws IOException {
        List<JsonValue> tensors = new ArrayList<>(array("tensors").values());
        Map<String, JsonValue> t = new LinkedHashMap<>(((JsonObject) tensors.get(2)).members());
        t.put("shape", new JsonArray(List.of(JsonNumber.of(64), new JsonString("64"))));
        tensors.set(2, new JsonObject(t));
        rewrite("tensors", new JsonArray(tensors));
        assertEquals(List.of(mf() + ": malformed manifest: tensors[2]: field 'shape' must hold integers, not the string"
                + " \"64\""), Manifest.verify(out));
    }

    @Test
    void aFormatThatIsNotAStringIsNamedInTheManifestsTerms() throws IOException {
        rewrite("format", new JsonArray(List.of()));
        assertEquals(List.of(mf() + ": unknown manifest format an array"), Manifest.verify(out));
        rewrite("files", new JsonObject(Map.of()));
        rewrite("format", new JsonString(Manifest.FORMAT));
        assertEquals(List.of(mf() + ": malformed manifest: field 'files' must be an array, not an object"),
                Manifest.verify(out));
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code dequant4j verify} on an export from elsewhere: its manifest is untrusted. File names with control characters
 * (a forged line of output), a NUL (an invalid path) or 100,000 characters give one short problem line each.
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
}

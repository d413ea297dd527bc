package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.cli.Main;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Hostile directory layouts (issue 13, classes 1 to 3), made for real: FIFOs from {@code mkfifo}, symbolic and hard
 * links, a Hugging Face hub cache laid out as huggingface_hub lays it out. Every file read goes through one rule
 * ({@code InputFiles}): a regular file, reached by links that stay in the directory or go from a snapshot into its
 * own repository's blobs; and the output may not share a file with any input.
 */
class HostileLayoutTest {
    private static final Path MODEL = Fixtures.checkpoint("llama-h64-nf4");
    private static final Path ADAPTER = Fixtures.adapter("h64-lora-r8");

    @TempDir
    Path tmp;

    record Run(int exit, String out, String err) {
        /** The one {@code error:} line. */
        String error() {
            assertEquals(1, err.lines().count(), err);
            assertTrue(err.startsWith("error: "), err);
            return err.strip();
        }
    }

    /** Runs the CLI in-process; a hang fails the test after 20 s instead of blocking the build. */
    private static Run cli(String... args) {
        return assertTimeoutPreemptively(Duration.ofSeconds(20), () -> {
            StringWriter out = new StringWriter();
            StringWriter err = new StringWriter();
            int exit = Main.run(args, new PrintWriter(out, true), new PrintWriter(err, true));
            return new Run(exit, out.toString(), err.toString());
        });
    }

    private Path copy(Path from, String name) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve(name));
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) {
                Files.copy(p, dir.resolve(p.getFileName()));
            }
        }
        return dir;
    }

    static void mkfifo(Path p) throws IOException, InterruptedException {
        Process pr = new ProcessBuilder("mkfifo", p.toString()).inheritIO().start();
        assertEquals(0, pr.waitFor());
        assertTrue(Files.exists(p) && !Files.isRegularFile(p) && !Files.isDirectory(p), "a FIFO at " + p);
    }

    private void assertNoOutput() throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            List<String> left = s.map(p -> p.getFileName().toString()).filter(n -> n.contains("out")).toList();
            assertEquals(List.of(), left, "nothing written");
        }
    }

    // --- 1. non-regular files ---

    @ParameterizedTest
    @ValueSource(strings = {"model.safetensors", "weights.safetensors", "model.safetensors.index.json", "config.json",
        "tokenizer.json", "special_tokens_map.json"})
    void aFifoAsAnyInputFileIsRefusedWithoutOpeningIt(String name) throws Exception {
        Path dir = copy(MODEL, "m");
        if (name.equals("weights.safetensors")) {
            Files.delete(dir.resolve("model.safetensors"));
        }
        Files.deleteIfExists(dir.resolve(name));
        mkfifo(dir.resolve(name));
        Run r = cli("export", dir.toString(), "--out", tmp.resolve("out").toString());
        assertEquals(1, r.exit(), r.err());
        assertEquals("error: " + dir.resolve(name) + ": is not a regular file (a FIFO, socket or device); refused, as"
                + " reading it could block or never end", r.error());
        assertNoOutput();
        if (!name.startsWith("tokenizer") && !name.startsWith("special")) {
            assertEquals(1, cli("inspect", dir.toString()).exit());
        }
    }

    @Test
    void aConfigThatIsNotARegularFileIsAnErrorNotAnOmission() throws Exception {
        Path dir = copy(MODEL, "m");
        Path cfg = dir.resolve("config.json");
        Files.delete(cfg);
        Files.createDirectory(cfg);
        assertEquals("error: " + cfg + ": is a directory, not a file", cli("inspect", dir.toString()).error());
        Files.delete(cfg);
        Files.createSymbolicLink(cfg, dir.resolve("gone.json"));
        assertEquals("error: " + cfg + ": is a dangling link", cli("inspect", dir.toString()).error());
        Files.delete(cfg);
        Files.createSymbolicLink(cfg, Path.of("/dev/zero"));
        assertTrue(cli("export", dir.toString(), "--out", tmp.resolve("out").toString()).error()
                .startsWith("error: " + cfg + ": is a link that leads out of the directory (to /dev/zero); refused"));
        // a link inside the directory to a FIFO inside it
        Files.delete(cfg);
        mkfifo(dir.resolve("pipe"));
        Files.createSymbolicLink(cfg, Path.of("pipe"));
        assertEquals("error: " + cfg + ": is not a regular file (a FIFO, socket or device); refused, as reading it"
                + " could block or never end", cli("inspect", dir.toString()).error());
        assertNoOutput();
    }

    @Test
    void aFifoInAnAdapterIsRefused() throws Exception {
        Path model = copy(MODEL, "m");
        for (String name : new String[] {"adapter_config.json", "adapter_model.safetensors"}) {
            Path adapter = copy(ADAPTER, "a-" + name);
            Files.delete(adapter.resolve(name));
            mkfifo(adapter.resolve(name));
            Run r = cli("export", model.toString(), "--adapter", adapter.toString(), "--out",
                    tmp.resolve("out").toString());
            assertEquals("error: " + adapter.resolve(name) + ": is not a regular file (a FIFO, socket or device);"
                    + " refused, as reading it could block or never end", r.error());
            assertEquals(1, cli("inspect", adapter.toString()).exit());
        }
        assertNoOutput();
    }

    @Test
    void verifyRefusesAFifoManifestOrIndex() throws Exception {
        Path export = tmp.resolve("export");
        assertEquals(0, cli("export", MODEL.toString(), "--out", export.toString(), "--max-shard-size", "40kB")
                .exit());
        assertTrue(Files.exists(export.resolve("model.safetensors.index.json")));
        assertEquals(0, cli("verify", export.toString()).exit());
        for (String name : new String[] {"model.safetensors.index.json", "dequant4j-manifest.json"}) {
            Path f = export.resolve(name);
            byte[] saved = Files.readAllBytes(f);
            Files.delete(f);
            mkfifo(f);
            Run r = cli("verify", export.toString());
            assertEquals(1, r.exit(), r.out() + r.err());
            assertTrue((r.out() + r.err()).contains(f + ": is not a regular file"), r.out() + r.err());
            Files.delete(f);
            Files.write(f, saved);
        }
    }

    // --- 2. links ---

    @Test
    void weightsLinkedOutOfTheDirectoryAreRefused() throws Exception {
        Path secret = copy(MODEL, "private");
        Path dir = Files.createDirectories(tmp.resolve("public"));
        Files.copy(MODEL.resolve("config.json"), dir.resolve("config.json"));
        Files.createSymbolicLink(dir.resolve("model.safetensors"), Path.of("../private/model.safetensors"));
        assertTrue(cli("export", dir.toString(), "--out", tmp.resolve("out").toString()).error().startsWith(
                "error: " + dir.resolve("model.safetensors") + ": is a link that leads out of the directory (to "
                        + secret.resolve("model.safetensors").toRealPath() + "); refused"));
        assertEquals(1, cli("inspect", dir.toString()).exit());
        assertNoOutput();

        // an adapter's weights or config linked out of the adapter directory
        for (String name : new String[] {"adapter_model.safetensors", "adapter_config.json"}) {
            Path elsewhere = copy(ADAPTER, "elsewhere-" + name);
            Path adapter = copy(ADAPTER, "adapter-" + name);
            Files.delete(adapter.resolve(name));
            Files.createSymbolicLink(adapter.resolve(name), elsewhere.resolve(name));
            assertTrue(cli("export", MODEL.toString(), "--adapter", adapter.toString(), "--out",
                    tmp.resolve("out").toString()).error().startsWith("error: " + adapter.resolve(name)
                    + ": is a link that leads out of the directory"), name);
        }
        assertNoOutput();
    }

    @Test
    void linksInsideTheDirectoryAreFollowed() throws Exception {
        Path dir = copy(MODEL, "m");
        Files.createDirectories(dir.resolve("store"));
        Files.move(dir.resolve("model.safetensors"), dir.resolve("store/w.safetensors"));
        Files.createSymbolicLink(dir.resolve("model.safetensors"), Path.of("store/w.safetensors"));
        assertEquals(0, cli("export", dir.toString(), "--out", tmp.resolve("out").toString()).exit());
    }

    /** {@code <cache>/models--org--name/{blobs/<sha>, snapshots/<rev>/<file> -> ../../blobs/<sha>}}. */
    private Path hubSnapshot(Path cache, String repo, Path from) throws IOException {
        Path blobs = Files.createDirectories(cache.resolve(repo).resolve("blobs"));
        Path snapshot = Files.createDirectories(cache.resolve(repo).resolve("snapshots/5f0e3c1a"));
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) {
                String sha = Integer.toHexString(p.getFileName().toString().hashCode());
                Files.copy(p, blobs.resolve(sha));
                Files.createSymbolicLink(snapshot.resolve(p.getFileName()), Path.of("../../blobs", sha));
            }
        }
        return snapshot;
    }

    @Test
    void theHubCacheLayoutWorksAndOnlyWithinItsRepository() throws Exception {
        Path cache = tmp.resolve("hub");
        Path model = hubSnapshot(cache, "models--org--tiny", MODEL);
        Path adapter = hubSnapshot(cache, "models--org--tiny-lora", ADAPTER);
        Run ok = cli("export", model.toString(), "--adapter", adapter.toString(), "--out",
                tmp.resolve("from-hub").toString());
        assertEquals(0, ok.exit(), ok.err());
        assertEquals(0, cli("verify", tmp.resolve("from-hub").toString()).exit());

        // a snapshot whose weights are another repository's blob
        Path other = Files.createDirectories(cache.resolve("models--evil--m/snapshots/0000aaaa"));
        Files.copy(MODEL.resolve("config.json"), other.resolve("config.json"));
        Path blob = cache.resolve("models--org--tiny/blobs")
                .resolve(Integer.toHexString("model.safetensors".hashCode()));
        Files.createSymbolicLink(other.resolve("model.safetensors"),
                Path.of("../../../models--org--tiny/blobs", blob.getFileName().toString()));
        assertTrue(cli("export", other.toString(), "--out", tmp.resolve("out").toString()).error().startsWith(
                "error: " + other.resolve("model.safetensors") + ": is a link that leads out of the directory"));
    }

    // --- 3. the output never replaces an input ---

    @Test
    void anOutputOverTheHubBlobsIsRefusedAndTheBlobsKept() throws Exception {
        Path model = hubSnapshot(tmp.resolve("hub"), "models--org--tiny", MODEL);
        Path blobs = model.resolve("../../blobs").normalize();
        List<byte[]> before = contents(blobs);
        Run r = cli("export", model.toString(), "--out", blobs.toString(), "--overwrite");
        assertTrue(r.error().startsWith("error: " + blobs + ": output would replace an input: " + blobs), r.err());
        List<byte[]> after = contents(blobs);
        assertEquals(before.size(), after.size());
        for (int i = 0; i < before.size(); i++) {
            assertArrayEquals(before.get(i), after.get(i));
        }
        assertEquals(0, cli("inspect", model.toString()).exit());
    }

    @Test
    void anOutputHoldingAHardLinkToAnInputIsRefused() throws Exception {
        Path model = copy(MODEL, "m");
        Path out = Files.createDirectories(tmp.resolve("old-export"));
        Files.createLink(out.resolve("kept.safetensors"), model.resolve("model.safetensors"));
        Run r = cli("export", model.toString(), "--out", out.toString(), "--overwrite");
        assertTrue(r.error().contains("output would replace an input: " + out.resolve("kept.safetensors")), r.err());
        assertEquals(Files.size(MODEL.resolve("model.safetensors")), Files.size(model.resolve("model.safetensors")));
        assertTrue(Files.exists(out.resolve("kept.safetensors")));
    }

    private static List<byte[]> contents(Path dir) throws IOException {
        List<byte[]> all = new ArrayList<>();
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.sorted().toList()) {
                all.add(Files.readAllBytes(p));
            }
        }
        return all;
    }

    @ParameterizedTest
    @ValueSource(strings = {"", " ", "\t"})
    void anEmptyOutIsAUsageError(String out) {
        Run r = cli("export", MODEL.toString(), "--out", out, "--overwrite");
        assertEquals(2, r.exit(), r.err());
        assertTrue(r.err().startsWith("error: Invalid value for option '--out': must name a directory"), r.err());
    }

    @Test
    void aFailedExportRemovesTheParentsItCreated() throws Exception {
        Path model = copy(MODEL, "m");
        Path out = tmp.resolve("new/a/b/out");
        Files.createDirectories(tmp.resolve("new"));
        Files.writeString(tmp.resolve("new/keep"), "x");
        try (Checkpoint c = Checkpoint.open(model)) {
            // truncated after it was opened: the export fails once its output directory exists
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(
                    model.resolve("model.safetensors"), java.nio.file.StandardOpenOption.WRITE)) {
                ch.truncate(4096);
            }
            Dequant4jException e = org.junit.jupiter.api.Assertions.assertThrows(Dequant4jException.class,
                    () -> Export.of(c).to(out));
            assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        }
        assertFalse(Files.exists(tmp.resolve("new/a")), "new/a/b removed");
        assertTrue(Files.exists(tmp.resolve("new/keep")), "what was there is kept");
    }
}

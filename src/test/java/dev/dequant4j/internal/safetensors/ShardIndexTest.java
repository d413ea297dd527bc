package dev.dequant4j.internal.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.RawSafetensors;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** model.safetensors.index.json: shard names must stay inside the model directory and match the shards. */
class ShardIndexTest {
    @TempDir
    Path root;
    Path model;
    Path index;

    @BeforeEach
    void twoShards() {
        model = root.resolve("model");
        index = model.resolve(ShardIndex.FILE_NAME);
        shard("s1.safetensors", "a", "b");
        shard("s2.safetensors", "c");
    }

    private void shard(String file, String... names) {
        List<RawSafetensors.Tensor> ts = new java.util.ArrayList<>();
        for (String n : names) {
            ts.add(new RawSafetensors.Tensor(n, "F32", new long[] {1}, RawSafetensors.f32(n.charAt(0))));
        }
        RawSafetensors.write(model.resolve(file), RawSafetensors.file(ts));
    }

    private void index(String weightMap) throws IOException {
        Files.writeString(index, "{\"metadata\":{\"total_size\":12},\"weight_map\":{" + weightMap + "}}");
    }

    private Dequant4jException fails() {
        return assertThrows(Dequant4jException.class, () -> TensorStore.openSharded(index).close());
    }

    @Test
    void aValidIndexResolvesEveryTensorInItsShard() throws IOException {
        index("\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\",\"b\":\"s1.safetensors\"");
        try (TensorStore s = TensorStore.openSharded(index)) {
            assertEquals(List.of("a", "c", "b"), List.copyOf(s.refs().keySet()), "index order");
            assertEquals("s2.safetensors", s.get("c").path().getFileName().toString());
            assertArrayEquals(RawSafetensors.f32('b'), s.get("b").bytes());
            assertEquals(List.of("s1.safetensors", "s2.safetensors"), s.index().shardNames());
            assertEquals(Map.of("a", "s1.safetensors", "c", "s2.safetensors", "b", "s1.safetensors"),
                    s.index().weightMap());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"../x.safetensors", "/etc/x.safetensors", "sub/s1.safetensors", "..\\s1.safetensors",
        "..", ".", "", "./s1.safetensors", "s1.safetensors/"})
    void namesThatAreNotPlainFileNamesAreRefused(String shard) throws IOException {
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":" + RawSafetensors.quote(shard));
        Dequant4jException e = fails();
        assertEquals(index + ": tensor 'c': shard name \"" + shard + "\" is not a plain file name in the model "
                + "directory (refused: it could point outside it)", e.getMessage());
        assertEquals(Optional.of("c"), e.tensor());
    }

    @Test
    void anAbsolutePathToARealShardIsRefused() throws IOException {
        Path abs = model.resolve("s2.safetensors").toAbsolutePath();
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":" + RawSafetensors.quote(abs.toString()));
        assertEquals(index + ": tensor 'c': shard name \"" + abs + "\" is not a plain file name in the model directory"
                + " (refused: it could point outside it)", fails().getMessage());
    }

    @Test
    void aLinkThatLeavesTheDirectoryIsRefused() throws IOException {
        Path outside = Files.move(model.resolve("s2.safetensors"), root.resolve("elsewhere.safetensors"));
        Files.createSymbolicLink(model.resolve("s2.safetensors"), Path.of("..", "elsewhere.safetensors"));
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");
        assertEquals(index + ": tensor 'c': shard s2.safetensors is a link that leads out of the directory (to "
                + outside.toRealPath() + "); refused", fails().getMessage());
    }

    /** The Hugging Face hub cache: snapshots/<rev>/<file> -> ../../blobs/<hash> is its normal layout. */
    @Test
    void hubCacheLinksIntoTheRepositoryBlobsAreFollowed() throws IOException {
        Path repo = root.resolve("models--org--llama");
        Path blobs = Files.createDirectories(repo.resolve("blobs"));
        Path snapshot = Files.createDirectories(repo.resolve("snapshots").resolve("0123abcd"));
        for (String f : new String[] {"s1.safetensors", "s2.safetensors"}) {
            Files.move(model.resolve(f), blobs.resolve("hash-" + f));
            Files.createSymbolicLink(snapshot.resolve(f), Path.of("..", "..", "blobs", "hash-" + f));
        }
        Path cachedIndex = snapshot.resolve(ShardIndex.FILE_NAME);
        Files.writeString(cachedIndex, "{\"weight_map\": {\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                + "\"c\":\"s2.safetensors\"}}");
        try (TensorStore s = TensorStore.openSharded(cachedIndex)) {
            assertArrayEquals(RawSafetensors.f32('c'), s.get("c").bytes());
        }
    }

    @Test
    void aLinkIntoAnotherRepositorysBlobsIsRefused() throws IOException {
        Path other = Files.createDirectories(root.resolve("models--evil--x").resolve("blobs"));
        Path snapshot = Files.createDirectories(root.resolve("models--org--llama").resolve("snapshots").resolve("r"));
        Files.move(model.resolve("s1.safetensors"), snapshot.resolve("s1.safetensors"));
        Path target = Files.move(model.resolve("s2.safetensors"), other.resolve("h"));
        Files.createSymbolicLink(snapshot.resolve("s2.safetensors"), target);
        Path cachedIndex = snapshot.resolve(ShardIndex.FILE_NAME);
        Files.writeString(cachedIndex, "{\"weight_map\": {\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\","
                + "\"c\":\"s2.safetensors\"}}");
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> TensorStore.openSharded(cachedIndex));
        assertEquals(cachedIndex + ": tensor 'c': shard s2.safetensors is a link that leads out of the "
                + "directory (to " + target.toRealPath() + "); refused", e.getMessage());
    }

    @Test
    void aLinkWithinTheDirectoryIsFollowed() throws IOException {
        Files.move(model.resolve("s2.safetensors"), model.resolve("real.safetensors"));
        Files.createSymbolicLink(model.resolve("s2.safetensors"), Path.of("real.safetensors"));
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");
        try (TensorStore s = TensorStore.openSharded(index)) {
            assertArrayEquals(RawSafetensors.f32('c'), s.get("c").bytes());
        }
    }

    @Test
    void aDanglingLinkIsAMissingShard() throws IOException {
        Files.delete(model.resolve("s2.safetensors"));
        Files.createSymbolicLink(model.resolve("s2.safetensors"), Path.of("nowhere.safetensors"));
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");
        assertEquals(index + ": tensor 'c': shard s2.safetensors is a dangling link", fails().getMessage());
    }

    @Test
    void aMissingShardIsNamed() throws IOException {
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"");
        Dequant4jException e = fails();
        assertEquals(index + ": tensor 'c': missing shard model-00002-of-00002.safetensors (not in " + model.toAbsolutePath()
                + ")", e.getMessage());
        // the same through the public API
        Dequant4jException viaCheckpoint = assertThrows(Dequant4jException.class, () -> Checkpoint.open(model));
        assertEquals(e.getMessage(), viaCheckpoint.getMessage());
    }

    @Test
    void aShardThatIsNotSafetensorsIsRefused() throws IOException {
        Files.writeString(model.resolve("pytorch_model.bin"), "pickle");
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"pytorch_model.bin\"");
        assertEquals(index + ": tensor 'c': shard \"pytorch_model.bin\" is not a .safetensors file",
                fails().getMessage());
    }

    @Test
    void aShardThatIsADirectoryIsRefused() throws IOException {
        Files.createDirectory(model.resolve("d.safetensors"));
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"d.safetensors\"");
        assertEquals(index + ": tensor 'c': shard d.safetensors is a directory, not a file", fails().getMessage());
    }

    @Test
    void aTensorInTheIndexButNotInItsShard() throws IOException {
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\",\"d\":\"s2.safetensors\"");
        assertEquals(index + ": tensor 'd': listed in the index under s2.safetensors, but that shard does not contain it",
                fails().getMessage());
    }

    @Test
    void aTensorInTheIndexUnderTheWrongShard() throws IOException {
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s1.safetensors\"");
        Dequant4jException e = fails();
        assertEquals(index + ": tensor 'c': listed in the index under s1.safetensors, but that shard does not contain it",
                e.getMessage());
    }

    @Test
    void aTensorInAShardButNotInTheIndex() throws IOException {
        index("\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");
        Dequant4jException e = fails();
        Path s1 = model.toAbsolutePath().resolve("s1.safetensors");
        assertEquals(s1 + ": tensor 'b': is in this shard but not in model.safetensors.index.json", e.getMessage());
        assertEquals(Optional.of(s1), e.file());
    }

    @Test
    void aTensorInTwoShardsIsInTheWrongOne() throws IOException {
        shard("s2.safetensors", "c", "b");
        index("\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"");
        assertEquals(model.toAbsolutePath().resolve("s2.safetensors") + ": tensor 'b': is in this shard but the index "
                + "maps it to s1.safetensors", fails().getMessage());
    }

    @Test
    void malformedIndexFiles() throws IOException {
        Files.writeString(index, "{\"weight_map\":{\"a\":\"s1.safetensors\",}}");
        assertEquals(index + ": invalid JSON: expected a string key in object at byte 36", fails().getMessage());
        Files.writeString(index, "{\"metadata\":{}}");
        assertEquals(index + ": missing field 'weight_map'", fails().getMessage());
        Files.writeString(index, "{\"weight_map\":[\"s1.safetensors\"]}");
        assertEquals(index + ": field 'weight_map' must be an object, not an array", fails().getMessage());
        Files.writeString(index, "{\"weight_map\":{}}");
        assertEquals(index + ": weight_map is empty", fails().getMessage());
        Files.writeString(index, "{\"weight_map\":{\"a\":1}}");
        assertEquals(index + ": tensor 'a': weight_map value must be a file name", fails().getMessage());
        Files.writeString(index, "{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s2.safetensors\"}}");
        assertEquals(index + ": invalid JSON: duplicate key \"a\" at byte 36", fails().getMessage());
        Files.writeString(index, "version https://git-lfs.github.com/spec/v1\n");
        // a file that is not JSON is quoted nowhere in the message
        assertEquals(index + ": invalid JSON: not a JSON object (the file does not start with '{')",
                fails().getMessage());
    }
}

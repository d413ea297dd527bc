package dev.dequant4j.internal.safetensors;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

/**
 * {@code model.safetensors.index.json}: which shard holds each tensor. Shard names must be plain file names of
 * {@code .safetensors} files inside the model directory; absolute paths, separators, {@code ..} and links that
 * lead out of the directory are refused ({@link InputFiles}), so a hostile index cannot make us read files elsewhere.
 */
public record ShardIndex(Path file, Map<String, String> weightMap, List<String> shardNames) {
    public static final String FILE_NAME = "model.safetensors.index.json";

    public ShardIndex {
        weightMap = Collections.unmodifiableMap(weightMap);
        shardNames = List.copyOf(shardNames);
    }

    public static ShardIndex read(Path indexFile) {
        JsonObject root;
        try {
            root = Json.readObject(indexFile, Json.MAX_FILE_BYTES);
        } catch (NoSuchFileException e) {
            throw new Dequant4jException(Kind.IO, indexFile, "no such file");
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, indexFile, "cannot read: " + e.getMessage(), e);
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, "invalid JSON: " + e.getMessage(), e);
        }
        JsonObject map;
        try {
            map = root.getObject("weight_map");
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, e.getMessage(), e);
        }
        Path dir = indexFile.toAbsolutePath().getParent();
        Map<String, String> weightMap = new LinkedHashMap<>();
        LinkedHashSet<String> shards = new LinkedHashSet<>();
        for (Map.Entry<String, JsonValue> e : map.members().entrySet()) {
            if (!(e.getValue() instanceof JsonString s)) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, e.getKey(), "weight_map value must be a file name");
            }
            String shard = s.value();
            if (shards.add(shard)) {
                checkShardName(indexFile, e.getKey(), shard, dir);
            }
            weightMap.put(e.getKey(), shard);
        }
        if (weightMap.isEmpty()) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, "weight_map is empty");
        }
        return new ShardIndex(indexFile, weightMap, new ArrayList<>(shards));
    }

    private static void checkShardName(Path indexFile, String tensor, String shard, Path dir) {
        if (shard.isEmpty() || shard.contains("/") || shard.contains("\\") || shard.equals("..")
                || shard.equals(".") || shard.indexOf('\0') >= 0 || Path.of(shard).isAbsolute()) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, tensor, "shard name \"" + Json.abbreviate(shard, 100)
                    + "\" is not a plain file name in the model directory (refused: it could point outside it)");
        }
        if (!shard.endsWith(".safetensors")) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, tensor, "shard \"" + Json.abbreviate(shard, 100)
                    + "\" is not a .safetensors file");
        }
        Path p = dir.resolve(shard);
        if (!InputFiles.present(p)) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, indexFile, tensor, "missing shard " + shard + " (not in " + dir
                    + ")");
        }
        try {
            InputFiles.check(dir, p);
        } catch (Dequant4jException e) {
            throw new Dequant4jException(e.kind(), indexFile, tensor, "shard " + shard + " " + e.detail(), e);
        }
    }
}

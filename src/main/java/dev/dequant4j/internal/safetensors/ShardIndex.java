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
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryIteratorException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
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
            root = Json.readObject(indexFile, listingLimit(indexFile));
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

    /**
     * An index or manifest lists each tensor of the directory's headers again, in at most
     * {@value #LISTING_BYTES_PER_HEADER_BYTE} bytes per byte of its header entry: a name escaped as Python's
     * {@code ensure_ascii} does takes at most 3 bytes per UTF-8 byte, and an indented shape puts every dimension on a
     * line of its own (11 bytes for the 2 of {@code 1,}).
     */
    static final long LISTING_BYTES_PER_HEADER_BYTE = 8;

    /**
     * The largest index or manifest read as {@code file}: the 100 MB of every JSON file we read, or, for a larger
     * one, that plus {@value #LISTING_BYTES_PER_HEADER_BYTE} bytes per byte of the safetensors headers beside it (a
     * 500,000-tensor export writes a 103 MB manifest), at most the 2 GB of one Java array.
     */
    public static long listingLimit(Path file) {
        try {
            if (Files.size(file) <= Json.MAX_FILE_BYTES) {
                return Json.MAX_FILE_BYTES;
            }
        } catch (IOException e) {
            return Json.MAX_FILE_BYTES;
        }
        Path dir = file.toAbsolutePath().getParent();
        long headers = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.safetensors")) {
            for (Path p : ds) {
                headers += headerLength(dir, p);
            }
        } catch (IOException | DirectoryIteratorException e) {
            // the files that could be read count
        }
        return Math.min(Integer.MAX_VALUE - 8L, Json.MAX_FILE_BYTES + LISTING_BYTES_PER_HEADER_BYTE * headers);
    }

    /** The header length a safetensors file declares, clamped to the limit; 0 for one that cannot be read. */
    private static long headerLength(Path dir, Path p) {
        try {
            InputFiles.check(dir, p);
        } catch (Dequant4jException e) {
            return 0;
        }
        try (FileChannel ch = FileChannel.open(p)) {
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(b, 0);
            return b.position() < 8 ? 0 : Math.clamp(b.getLong(0), 0, SafetensorsFile.MAX_HEADER_BYTES);
        } catch (IOException e) {
            return 0;
        }
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

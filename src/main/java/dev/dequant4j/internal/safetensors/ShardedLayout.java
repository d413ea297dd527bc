package dev.dequant4j.internal.safetensors;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Where every tensor of an output checkpoint goes, computed from names, dtypes and shapes alone before any data
 * moves: shard assignment (as huggingface_hub's {@code split_state_dict_into_shards_factory} does it), each shard's
 * header bytes, each tensor's absolute file offset, and the index file.
 */
public final class ShardedLayout {
    public static final String SINGLE_FILE = "model.safetensors";

    /** A tensor to be written. */
    public record Spec(String name, DType dtype, long[] shape) {
        public Spec {
            shape = shape.clone();
        }

        public long numel() {
            return TensorEntry.numel(shape);
        }

        public long byteSize() {
            return dtype.byteSize(numel());
        }
    }

    /** A tensor's place: its shard and the absolute file offset of its first byte. */
    public record Placement(Spec spec, int shard, long fileOffset) {
        public long byteSize() {
            return spec.byteSize();
        }
    }

    /** One output file: its name, its complete header (length prefix, JSON, padding), size and tensors. */
    public record Shard(String fileName, byte[] header, long fileSize, List<Placement> placements) {
        public long dataStart() {
            return header.length;
        }
    }

    private final List<Shard> shards;
    private final Map<String, Placement> byName;
    private final long totalSize;
    private final long totalParameters;

    private ShardedLayout(List<Shard> shards, Map<String, Placement> byName, long totalSize, long totalParameters) {
        this.shards = shards;
        this.byName = byName;
        this.totalSize = totalSize;
        this.totalParameters = totalParameters;
    }

    /** The header of every shard before its first tensor, and its closing brace. */
    private static final String HEADER_START = "{\"__metadata__\":{\"format\":\"pt\"}";

    /**
     * Plans the files for {@code specs}, in the given order. A tensor larger than {@code maxShardBytes} gets a shard
     * of its own; otherwise a new shard starts when the next tensor would overflow the current one, in data bytes or
     * in header bytes: no header exceeds {@link SafetensorsFile#MAX_HEADER_BYTES}, which the safetensors library (and
     * our reader) refuse to read. The data section of every file starts at a multiple of {@code alignment} (the
     * header is padded with spaces).
     *
     * @throws Dequant4jException before anything is written, when one tensor's header entry alone is over the limit
     */
    public static ShardedLayout plan(List<Spec> specs, long maxShardBytes, int alignment) {
        return plan(specs, maxShardBytes, alignment, SafetensorsFile.MAX_HEADER_BYTES);
    }

    /** {@link #plan(List, long, int)} with a header limit of {@code maxHeaderBytes} (the tests use small ones). */
    static ShardedLayout plan(List<Spec> specs, long maxShardBytes, int alignment, long maxHeaderBytes) {
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("maxShardBytes must be positive");
        }
        if (alignment < 8 || Integer.bitCount(alignment) != 1) {
            throw new IllegalArgumentException("alignment must be a power of two >= 8");
        }
        // the stored header length includes the padding, up to alignment - 1 spaces
        long headerBudget = maxHeaderBytes - alignment;
        long emptyHeader = HEADER_START.length() + 1;
        StringBuilder entry = new StringBuilder(256);
        List<List<Spec>> groups = new ArrayList<>();
        List<Spec> current = new ArrayList<>();
        long currentSize = 0;
        long currentHeader = emptyHeader;
        long total = 0;
        long params = 0;
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (Spec s : specs) {
            if (!seen.add(s.name())) {
                throw new IllegalArgumentException("duplicate tensor name " + s.name());
            }
            long size = s.byteSize();
            if (size < 0) {
                throw new IllegalArgumentException("tensor " + s.name() + " has no valid byte size");
            }
            total += size;
            params += s.numel();
            if (size > maxShardBytes) {
                requireFits(s, emptyHeader + entryBytes(entry, s, 0), headerBudget, maxHeaderBytes);
                groups.add(List.of(s));
                continue;
            }
            long entryBytes = entryBytes(entry, s, currentSize);
            if ((currentSize + size > maxShardBytes || currentHeader + entryBytes > headerBudget)
                    && !current.isEmpty()) {
                groups.add(current);
                current = new ArrayList<>();
                currentSize = 0;
                currentHeader = emptyHeader;
                entryBytes = entryBytes(entry, s, 0);
            }
            requireFits(s, emptyHeader + entryBytes, headerBudget, maxHeaderBytes);
            current.add(s);
            currentSize += size;
            currentHeader += entryBytes;
        }
        if (!current.isEmpty() || groups.isEmpty()) {
            groups.add(current);
        }
        int n = groups.size();
        List<Shard> shards = new ArrayList<>(n);
        Map<String, Placement> byName = new HashMap<>();
        for (int i = 0; i < n; i++) {
            String fileName = n == 1 ? SINGLE_FILE : String.format("model-%05d-of-%05d.safetensors", i + 1, n);
            Shard shard = layoutShard(fileName, i, groups.get(i), alignment);
            shards.add(shard);
            for (Placement p : shard.placements()) {
                byName.put(p.spec().name(), p);
            }
        }
        return new ShardedLayout(Collections.unmodifiableList(shards), byName, total, params);
    }

    private static void requireFits(Spec s, long headerBytes, long budget, long maxHeaderBytes) {
        if (headerBytes > budget) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, null, s.name(), "its header entry alone makes a "
                    + headerBytes + "-byte safetensors header, over the " + maxHeaderBytes + "-byte limit that"
                    + " safetensors readers enforce; it cannot be written as safetensors (nothing was written)");
        }
    }

    /** The UTF-8 length of the tensor's header entry (with its leading comma) at data offset {@code offset}. */
    private static long entryBytes(StringBuilder entry, Spec s, long offset) {
        entry.setLength(0);
        appendEntry(entry, s, offset);
        long n = 0;
        for (int i = 0; i < entry.length(); i++) {
            char c = entry.charAt(i);
            // as String.getBytes(UTF_8) encodes: a pair is 4 bytes, a lone surrogate becomes '?'
            if (Character.isHighSurrogate(c) && i + 1 < entry.length() && Character.isLowSurrogate(entry.charAt(i + 1))) {
                n += 4;
                i++;
            } else {
                n += c < 0x80 || Character.isSurrogate(c) ? 1 : c < 0x800 ? 2 : 3;
            }
        }
        return n;
    }

    private static void appendEntry(StringBuilder json, Spec s, long offset) {
        json.append(',');
        Json.writeString(json, s.name(), false);
        json.append(":{\"dtype\":\"").append(s.dtype().safetensorsName()).append("\",\"shape\":[");
        long[] shape = s.shape();
        for (int d = 0; d < shape.length; d++) {
            if (d > 0) {
                json.append(',');
            }
            json.append(shape[d]);
        }
        json.append("],\"data_offsets\":[").append(offset).append(',').append(offset + s.byteSize()).append("]}");
    }

    /**
     * A layout of files whose headers and sizes are already known (a GGUF export lays out its own files); it has no
     * placements and no index ({@link #indexJson} is for safetensors shards).
     */
    public static ShardedLayout of(List<Shard> shards) {
        return new ShardedLayout(List.copyOf(shards), Map.of(), 0, 0);
    }

    private static Shard layoutShard(String fileName, int index, List<Spec> specs, int alignment) {
        StringBuilder json = new StringBuilder(64 + specs.size() * 96);
        json.append(HEADER_START);
        long offset = 0;
        long[] begins = new long[specs.size()];
        for (int i = 0; i < specs.size(); i++) {
            Spec s = specs.get(i);
            begins[i] = offset;
            appendEntry(json, s, offset);
            offset += s.byteSize();
        }
        json.append('}');
        byte[] utf8 = json.toString().getBytes(StandardCharsets.UTF_8);
        long padded = 8 + utf8.length;
        padded = (padded + alignment - 1) / alignment * alignment;
        int headerLen = (int) (padded - 8);
        ByteBuffer header = ByteBuffer.allocate((int) padded).order(ByteOrder.LITTLE_ENDIAN);
        header.putLong(headerLen).put(utf8);
        while (header.hasRemaining()) {
            header.put((byte) ' ');
        }
        List<Placement> placements = new ArrayList<>(specs.size());
        for (int i = 0; i < specs.size(); i++) {
            placements.add(new Placement(specs.get(i), index, padded + begins[i]));
        }
        return new Shard(fileName, header.array(), padded + offset, Collections.unmodifiableList(placements));
    }

    public List<Shard> shards() {
        return shards;
    }

    public Placement placement(String name) {
        return byName.get(name);
    }

    /** Sum of tensor byte sizes, as the index's {@code metadata.total_size}. */
    public long totalSize() {
        return totalSize;
    }

    public long totalParameters() {
        return totalParameters;
    }

    /** Sum of the file sizes, headers included. */
    public long totalFileBytes() {
        long t = 0;
        for (Shard s : shards) {
            t += s.fileSize();
        }
        return t;
    }

    /**
     * The index file as transformers writes it ({@code json.dumps(index, indent=2, sort_keys=True) + "\n"}), or
     * null when there is a single file (transformers writes no index then).
     */
    public byte[] indexJson() {
        if (shards.size() == 1) {
            return null;
        }
        Map<String, JsonValue> meta = new LinkedHashMap<>();
        meta.put("total_parameters", JsonNumber.of(totalParameters));
        meta.put("total_size", JsonNumber.of(totalSize));
        Map<String, JsonValue> weightMap = new TreeMap<>();
        for (Shard s : shards) {
            for (Placement p : s.placements()) {
                weightMap.put(p.spec().name(), new JsonString(s.fileName()));
            }
        }
        Map<String, JsonValue> root = new LinkedHashMap<>();
        root.put("metadata", new JsonObject(meta));
        root.put("weight_map", new JsonObject(new LinkedHashMap<>(weightMap)));
        return (Json.write(new JsonObject(root), Json.Style.PYTHON_INDENT2_SORTED) + "\n")
                .getBytes(StandardCharsets.UTF_8);
    }
}

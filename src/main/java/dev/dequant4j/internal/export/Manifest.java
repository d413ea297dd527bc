package dev.dequant4j.internal.export;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.internal.Printable;
import dev.dequant4j.internal.gguf.GgufFile;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.ShardIndex;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.DigestInputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Function;

/**
 * {@code dequant4j-manifest.json}: what an export wrote and from what — tool version, sources and the hashes of
 * their headers, adapters and their scalings, options, every file with its size and SHA-256, every tensor with its
 * dtype, shape and merge statistics — and the check of a directory against it ({@code verify}).
 */
public final class Manifest {
    public static final String FILE_NAME = "dequant4j-manifest.json";
    static final String FORMAT = "dequant4j-manifest/1";

    private Manifest() {}

    /** A written file and its hash. */
    public record FileRecord(String name, long size, String sha256) {}

    /**
     * @param dtypes each tensor's stored type name, or null to take the stats' dtypes
     */
    static JsonObject build(JsonObject tool, JsonObject source, JsonValue base16, List<JsonValue> adapters,
                            JsonObject options, List<FileRecord> files, List<TensorStats> stats,
                            List<String> dtypes) {
        Map<String, JsonValue> m = new LinkedHashMap<>();
        m.put("format", new JsonString(FORMAT));
        m.put("tool", tool);
        m.put("source", source);
        m.put("base16", base16);
        m.put("adapters", new JsonArray(adapters));
        m.put("options", options);
        List<JsonValue> fl = new ArrayList<>();
        for (FileRecord f : files) {
            Map<String, JsonValue> o = new LinkedHashMap<>();
            o.put("name", new JsonString(f.name()));
            o.put("size", JsonNumber.of(f.size()));
            o.put("sha256", new JsonString(f.sha256()));
            fl.add(new JsonObject(o));
        }
        m.put("files", new JsonArray(fl));
        List<JsonValue> tl = new ArrayList<>();
        for (int i = 0; i < stats.size(); i++) {
            TensorStats s = stats.get(i);
            tl.add(tensorRecord(s, dtypes == null ? s.dtype().name() : dtypes.get(i)));
        }
        m.put("tensors", new JsonArray(tl));
        return new JsonObject(m);
    }

    static JsonObject build(JsonObject tool, JsonObject source, JsonValue base16, List<JsonValue> adapters,
                            JsonObject options, List<FileRecord> files, List<TensorStats> stats) {
        return build(tool, source, base16, adapters, options, files, stats, null);
    }

    /** A tensor's entry; {@code dtype} is the stored type's name (a GGUF export's are ggml's: F32, Q8_0, ...). */
    private static JsonObject tensorRecord(TensorStats s, String dtype) {
        Map<String, JsonValue> o = new LinkedHashMap<>();
        o.put("name", new JsonString(s.name()));
        o.put("dtype", new JsonString(dtype));
        List<JsonValue> shape = new ArrayList<>();
        for (long d : s.shape()) {
            shape.add(JsonNumber.of(d));
        }
        o.put("shape", new JsonArray(shape));
        o.put("source_kind", new JsonString(s.sourceKind().name()));
        o.put("merge_steps", JsonNumber.of(s.mergeSteps()));
        o.put("max_abs_delta", number(s.maxAbsDelta()));
        o.put("rel_delta_norm", number(s.relDeltaNorm()));
        return new JsonObject(o);
    }

    /** A statistic: null when not measured (NaN), a string for an infinite ratio (all-zero base). */
    private static JsonValue number(double d) {
        if (Double.isNaN(d)) {
            return dev.dequant4j.internal.json.JsonNull.NULL;
        }
        return Double.isFinite(d) ? JsonNumber.of(d) : new JsonString(Double.toString(d));
    }

    /** SHA-256 (hex) of a whole file. */
    public static String sha256(Path file) throws IOException {
        MessageDigest md = sha();
        try (InputStream in = new DigestInputStream(Files.newInputStream(file), md)) {
            in.transferTo(java.io.OutputStream.nullOutputStream());
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /** SHA-256 (hex) of a safetensors file's header (length prefix and JSON): identifies a source cheaply. */
    static String headerSha256(SafetensorsFile f) {
        MessageDigest md = sha();
        byte[] header = f.headerBytes();
        md.update(header);
        return HexFormat.of().formatHex(md.digest());
    }

    /** SHA-256 (hex) of the header of a safetensors file on disk (read up to the declared header length). */
    static String headerSha256(Path file) throws IOException {
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(file)) {
            java.nio.ByteBuffer len = java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            ch.read(len, 0);
            long n = len.flip().remaining() == 8 ? len.getLong() : 0;
            long total = Math.min(ch.size(), 8 + Math.clamp(n, 0, SafetensorsFile.MAX_HEADER_BYTES));
            java.nio.ByteBuffer all = java.nio.ByteBuffer.allocate((int) total);
            while (all.hasRemaining() && ch.read(all, all.position()) > 0) {
                // read the whole header
            }
            MessageDigest md = sha();
            md.update(all.flip());
            return HexFormat.of().formatHex(md.digest());
        }
    }

    static MessageDigest sha() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Checks a directory against its manifest: every listed file exists with its size and SHA-256, every
     * safetensors and GGUF file passes header validation, the index (if any) matches the shards, every listed tensor
     * is there with its dtype and shape, and no unlisted safetensors or GGUF file is present.
     *
     * <p>A broken file is one problem, its first: a file with the wrong size is not also reported for its header,
     * nor are its tensors reported missing, nor the index for pointing at it.
     *
     * @return the problems found, one line each; empty when the directory is intact
     */
    public static List<String> verify(Path dir) {
        return verify(dir, SafetensorsFile::open);
    }

    /** {@link #verify(Path)}, opening safetensors files with {@code open} (the tests count how often it is called). */
    static List<String> verify(Path dir, Function<Path, SafetensorsFile> open) {
        Path mf = dir.resolve(FILE_NAME);
        if (!InputFiles.present(mf)) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, mf,
                    "no manifest: not a dequant4j export (or the manifest was removed)");
        }
        InputFiles.check(dir, mf);
        JsonObject m;
        try {
            m = Json.readObject(mf, ShardIndex.listingLimit(mf));
        } catch (java.nio.file.NoSuchFileException e) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, mf, "no manifest: not a dequant4j export (or the manifest was removed)");
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, mf, "cannot read: " + e.getMessage(), e);
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, mf, "invalid JSON: " + e.getMessage(), e);
        }
        List<String> problems = new ArrayList<>();
        boolean broken = false;
        Set<String> listed = new HashSet<>();
        Map<String, Found> found = new HashMap<>();
        String where = "";
        try (FileHashes hashes = new FileHashes(dir, m); Headers headers = new Headers(open)) {
            JsonValue format = m.get("format");
            if (!(format instanceof JsonString fs && fs.value().equals(FORMAT))) {
                problems.add(mf + ": unknown manifest format "
                        + (format == null ? "(no \"format\" field)" : JsonObject.describe(format)));
                return problems.stream().map(Manifest::oneLine).toList();
            }
            JsonArray files = m.getArray("files");
            Set<SafetensorsFile> merged = new HashSet<>();
            for (int i = 0; i < files.size(); i++) {
                where = "files[" + i + "]: ";
                JsonObject f = element(files, i);
                String name = f.getString("name");
                listed.add(name);
                if (!plainName(name)) {
                    problems.add(mf + ": file name \"" + Json.abbreviate(name, 100) + "\" is not a plain file name");
                    continue;
                }
                Path p = dir.resolve(name);
                if (!Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)) {
                    problems.add(p + (InputFiles.present(p) ? ": is not a regular file (a link, FIFO, directory or"
                            + " device; the export wrote a file)" : ": missing"));
                    broken = true;
                    continue;
                }
                long size = Files.size(p);
                if (size != f.getLong("size")) {
                    problems.add(p + ": size " + size + ", manifest says " + f.getLong("size"));
                    broken = true;
                    continue;
                }
                String sha = hashes.get(name);
                if (!sha.equals(f.getString("sha256"))) {
                    problems.add(p + ": sha256 " + sha + " differs from the manifest's " + f.getString("sha256"));
                    broken = true;
                    continue;
                }
                if (name.endsWith(".safetensors")) {
                    try {
                        SafetensorsFile sf = headers.open(p);
                        if (merged.add(sf)) {
                            sf.tensors().forEach((n, e) -> found.put(n, new Found(e.dtype().name(), e.shape())));
                        }
                    } catch (Dequant4jException e) {
                        problems.add(e.getMessage());
                        broken = true;
                    }
                } else if (name.endsWith(".gguf")) {
                    try (GgufFile gf = GgufFile.open(p)) {
                        gf.tensors().forEach((n, t) -> found.put(n, new Found(t.type().name(), reversed(t.ne()))));
                    } catch (Dequant4jException e) {
                        problems.add(e.getMessage());
                        broken = true;
                    }
                }
            }
            where = "";
            Path index = dir.resolve(ShardIndex.FILE_NAME);
            if (!broken && InputFiles.present(index)) {
                try {
                    InputFiles.check(dir, index);
                    ShardIndex shards = ShardIndex.read(index);
                    Map<String, SafetensorsFile> byShard = new LinkedHashMap<>();
                    for (String shard : shards.shardNames()) {
                        byShard.put(shard, headers.open(dir.resolve(shard)));
                    }
                    TensorStore.checkAgreement(shards, byShard);
                } catch (Dequant4jException e) {
                    problems.add(e.getMessage());
                }
            }
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.{safetensors,gguf}")) {
                for (Path p : ds) {
                    if (!listed.contains(p.getFileName().toString())) {
                        problems.add(p + ": " + (p.toString().endsWith(".gguf") ? "GGUF" : "safetensors")
                                + " file not in the manifest");
                    }
                }
            }
            JsonArray tensors = m.getArray("tensors");
            for (int i = 0; i < tensors.size(); i++) {
                where = "tensors[" + i + "]: ";
                JsonObject t = element(tensors, i);
                String name = t.getString("name");
                Found e = found.get(name);
                if (e == null) {
                    if (!broken) {
                        problems.add(dir + ": tensor '" + name + "' listed in the manifest is in no file");
                    }
                    continue;
                }
                long[] shape = shape(t.getArray("shape"));
                if (!e.dtype().equals(t.getString("dtype")) || !Arrays.equals(shape, e.shape())) {
                    problems.add(dir + ": tensor '" + name + "' is " + e.dtype() + Arrays.toString(e.shape())
                            + ", manifest says " + t.getString("dtype") + Arrays.toString(shape));
                }
            }
        } catch (JsonException e) {
            problems.add(mf + ": malformed manifest: " + where + e.getMessage());
        } catch (IOException e) {
            problems.add(dir + ": " + e.getMessage());
        }
        // a file listed twice would otherwise repeat its problem
        return problems.stream().map(Manifest::oneLine).distinct().toList();
    }

    /** A tensor found in an output file: its stored type's name and its shape, outermost dimension first. */
    private record Found(String dtype, long[] shape) {}

    private static long[] reversed(long[] ne) {
        long[] shape = new long[ne.length];
        for (int i = 0; i < ne.length; i++) {
            shape[i] = ne[ne.length - 1 - i];
        }
        return shape;
    }

    /** Entry {@code i} of a manifest array of objects. */
    private static JsonObject element(JsonArray a, int i) {
        if (a.get(i) instanceof JsonObject o) {
            return o;
        }
        throw new JsonException("must be an object, not " + JsonObject.describe(a.get(i)));
    }

    private static long[] shape(JsonArray a) {
        long[] shape = new long[a.size()];
        for (int i = 0; i < shape.length; i++) {
            if (!(a.get(i) instanceof JsonNumber n && n.isLong())) {
                throw new JsonException("field 'shape' must hold integers, not " + JsonObject.describe(a.get(i)));
            }
            shape[i] = n.longValue();
        }
        return shape;
    }

    /**
     * The safetensors files verify has opened, by file identity (device and inode), so that a file listed many
     * times, or under several names (hard links), or again by the index, has its header parsed once: a manifest
     * listing one 200,000-tensor shard 40 times took 23 s when each listing parsed it. A file that failed to open
     * fails the same way again without being read.
     */
    private static final class Headers implements AutoCloseable {
        private final Function<Path, SafetensorsFile> open;
        private final Map<Object, SafetensorsFile> files = new HashMap<>();
        private final Map<Object, Dequant4jException> failures = new HashMap<>();

        Headers(Function<Path, SafetensorsFile> open) {
            this.open = open;
        }

        SafetensorsFile open(Path p) {
            Object id = identity(p);
            SafetensorsFile f = files.get(id);
            if (f != null) {
                return f;
            }
            Dequant4jException failed = failures.get(id);
            if (failed != null) {
                throw failed;
            }
            try {
                f = open.apply(p);
            } catch (Dequant4jException e) {
                failures.put(id, e);
                throw e;
            }
            files.put(id, f);
            return f;
        }

        /** Device and inode where the file system has them, else the path with links resolved, else the path. */
        private static Object identity(Path p) {
            try {
                Object key = Files.readAttributes(p, BasicFileAttributes.class).fileKey();
                return key != null ? key : p.toRealPath();
            } catch (IOException e) {
                return p.toAbsolutePath().normalize();
            }
        }

        @Override
        public void close() {
            files.values().forEach(SafetensorsFile::close);
        }
    }

    /**
     * The SHA-256 of every file a manifest lists with a plain name and the right size, computed on up to one thread
     * per core (at most 8) as soon as the manifest is read: one thread hashes about 1.4 GB/s, so a multi-shard model
     * verifies several times faster on a machine with the cores. Entries it cannot use are left to the checks that
     * report them.
     */
    private static final class FileHashes implements AutoCloseable {
        private final Path dir;
        private final Map<String, Future<String>> futures = new HashMap<>();
        private final ExecutorService pool;

        FileHashes(Path dir, JsonObject manifest) {
            this.dir = dir;
            List<Path> files = new ArrayList<>();
            try {
                for (JsonValue v : manifest.getArray("files").values()) {
                    if (v instanceof JsonObject f && f.get("name") instanceof JsonString n
                            && f.get("size") instanceof JsonNumber size && size.isLong()) {
                        String name = n.value();
                        Path p = dir.resolve(name);
                        if (plainName(name) && Files.isRegularFile(p, LinkOption.NOFOLLOW_LINKS)
                                && Files.size(p) == size.longValue() && !futures.containsKey(name)) {
                            futures.put(name, null);
                            files.add(p);
                        }
                    }
                }
            } catch (JsonException | IOException | InvalidPathException e) {
                // reported by the checks that go through the entries one by one
            }
            int threads = Math.max(1, Math.min(Math.min(files.size(), 8), Runtime.getRuntime().availableProcessors()));
            pool = Executors.newFixedThreadPool(threads,
                    Thread.ofPlatform().name("dequant4j-verify-", 0).daemon().factory());
            for (Path p : files) {
                futures.put(p.getFileName().toString(), pool.submit(() -> sha256(p)));
            }
        }

        /** The file's SHA-256 (computed now if it was not submitted). */
        String get(String name) throws IOException {
            Future<String> f = futures.get(name);
            if (f == null) {
                return sha256(dir.resolve(name));
            }
            try {
                return f.get();
            } catch (ExecutionException e) {
                if (e.getCause() instanceof IOException io) {
                    throw io;
                }
                throw new IOException(e.getCause());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
        }

        @Override
        public void close() {
            pool.shutdownNow();
        }
    }

    /** A file name the manifest may list: no directories, no hidden files, no NUL. */
    private static boolean plainName(String name) {
        return !name.contains("/") && !name.contains("\\") && !name.startsWith(".") && name.indexOf('\0') < 0;
    }

    /**
     * A problem as the one line {@code verify} prints: names from a manifest may hold control characters (a forged
     * line break would let a manifest print a line of its choosing) and any length.
     */
    private static String oneLine(String problem) {
        return Printable.of(Json.abbreviate(problem, 2000));
    }
}

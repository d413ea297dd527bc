package dev.dequant4j;

import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.InputFiles;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.Grouping;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.ShardIndex;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A model checkpoint: a directory with {@code config.json} and one safetensors file or the shards of
 * {@code model.safetensors.index.json}, or a single {@code .safetensors} file.
 *
 * <p>Opening maps every file once and validates every header, so it costs time proportional to the headers, not
 * the weights. bitsandbytes weights are listed as logical tensors (their component keys are not listed on their
 * own) and are dequantized on the fly when read, bit for bit as bitsandbytes does it. Reads are thread-safe;
 * closing releases the mappings, and a read after (or racing with) {@link #close()} fails with a
 * {@link Dequant4jException}, never a crash.
 */
public final class Checkpoint implements AutoCloseable {
    /** Largest config.json we read. */
    static final long MAX_CONFIG_BYTES = 16L << 20;
    private static final int CHUNK = 1 << 16;

    static {
        Internals.setCheckpointAccess(new Internals.CheckpointAccess() {
            @Override
            public TensorStore store(Checkpoint c) {
                c.checkOpen();
                return c.store;
            }

            @Override
            public Map<String, LogicalTensor> logical(Checkpoint c) {
                c.checkOpen();
                return c.logical;
            }

            @Override
            public JsonObject config(Checkpoint c) {
                return c.config;
            }

            @Override
            public Path configFile(Checkpoint c) {
                return c.configFile;
            }
        });
    }

    private final Path path;
    private final Path directory;
    private final TensorStore store;
    private final Map<String, LogicalTensor> logical;
    private final List<TensorInfo> infos;
    private final JsonObject config;
    private final Path configFile;
    private volatile boolean closed;

    private Checkpoint(Path path, Path directory, TensorStore store, Map<String, LogicalTensor> logical,
                       JsonObject config, Path configFile) {
        this.path = path;
        this.directory = directory;
        this.store = store;
        this.logical = logical;
        this.config = config;
        this.configFile = configFile;
        List<TensorInfo> list = new ArrayList<>(logical.size());
        for (LogicalTensor t : logical.values()) {
            list.add(info(t));
        }
        this.infos = Collections.unmodifiableList(list);
    }

    /**
     * Opens a model directory or a single {@code .safetensors} file.
     *
     * @param path a directory with {@code config.json} and its safetensors file or shards, or one
     *             {@code .safetensors} file
     * @return the open checkpoint; close it to release the mapped files
     * @throws Dequant4jException naming the file (and tensor) for anything that is not a valid checkpoint
     */
    public static Checkpoint open(Path path) {
        if (!InputFiles.present(path)) {
            throw new Dequant4jException(Kind.IO, path, "no such file or directory");
        }
        Path dir;
        Path configFile = null;
        TensorStore store;
        if (Files.isDirectory(path)) {
            dir = path;
            Path index = path.resolve(ShardIndex.FILE_NAME);
            Path single = path.resolve("model.safetensors");
            Path cfg = path.resolve("config.json");
            // Present but not a regular file inside the directory (a FIFO, a dangling link, a link out): an error.
            Path weights = InputFiles.present(index) ? index
                    : InputFiles.present(single) ? single : soleSafetensors(path);
            InputFiles.check(dir, weights);
            if (InputFiles.present(cfg)) {
                InputFiles.check(dir, cfg);
                configFile = cfg;
            }
            store = weights == index ? TensorStore.openSharded(index) : TensorStore.openFile(weights);
        } else {
            dir = path.toAbsolutePath().getParent();
            store = TensorStore.openFile(path);
        }
        try {
            JsonObject config = configFile == null ? null : readConfig(configFile);
            Map<String, LogicalTensor> logical = Grouping.group(store, config);
            return new Checkpoint(path, dir, store, logical, config, configFile);
        } catch (RuntimeException e) {
            store.close();
            throw e;
        }
    }

    private static Path soleSafetensors(Path dir) {
        List<Path> found = new ArrayList<>();
        boolean adapter = Files.exists(dir.resolve("adapter_config.json"));
        boolean bin = Files.exists(dir.resolve("pytorch_model.bin"))
                || Files.exists(dir.resolve("pytorch_model.bin.index.json"));
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, "*.safetensors")) {
            for (Path p : ds) {
                found.add(p);
            }
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, dir, "cannot list directory: " + e.getMessage(), e);
        }
        if (adapter) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, dir, "this is a LoRA adapter directory (adapter_config.json), not a model;"
                    + " use it with LoraAdapter.open");
        }
        if (found.size() == 1) {
            return found.getFirst();
        }
        if (found.isEmpty()) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, dir, bin
                    ? "has only PyTorch .bin weights; dequant4j reads safetensors (convert with transformers first)"
                    : "no model.safetensors, " + ShardIndex.FILE_NAME + " or other .safetensors file");
        }
        throw new Dequant4jException(Kind.CORRUPT_INPUT, dir, "has " + found.size() + " .safetensors files but no "
                + ShardIndex.FILE_NAME + " saying which belong to the model");
    }

    private static JsonObject readConfig(Path file) {
        try {
            return Json.readObject(file, MAX_CONFIG_BYTES);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, file, "cannot read: " + e.getMessage(), e);
        } catch (JsonException e) {
            throw new Dequant4jException(Kind.CORRUPT_INPUT, file, "invalid JSON: " + e.getMessage(), e);
        }
    }

    private static TensorInfo info(LogicalTensor t) {
        return new TensorInfo(t.name(), t.kind(), t.shape(), t.dtype(), t.storedDtype(), t.storedBytes(),
                t.blocksize(), t.doubleQuant(), t.components());
    }

    /** {@return the path this checkpoint was opened from} */
    public Path path() {
        return path;
    }

    /** {@return the model directory (for a single file, the directory that holds it)} */
    public Path directory() {
        return directory;
    }

    /** {@return the safetensors files, in index order} */
    public List<Path> files() {
        List<Path> out = new ArrayList<>();
        for (SafetensorsFile f : store.files()) {
            out.add(f.path());
        }
        return Collections.unmodifiableList(out);
    }

    /** {@return the logical tensors in natural name order ("layers.2" before "layers.10")} */
    public List<TensorInfo> tensors() {
        return infos;
    }

    /**
     * The logical tensor with this name.
     *
     * @param name the tensor's name, as {@link #tensors()} lists it
     * @return its description
     * @throws Dequant4jException of kind {@link Dequant4jException.Kind#INVALID_REQUEST} if there is none
     */
    public TensorInfo tensor(String name) {
        LogicalTensor t = logical.get(name);
        if (t == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, name, "no such tensor" + componentHint(name));
        }
        return info(t);
    }

    /**
     * The logical tensor with this name, if there is one.
     *
     * @param name the tensor's name
     * @return its description, or empty
     */
    public Optional<TensorInfo> find(String name) {
        LogicalTensor t = logical.get(name);
        return t == null ? Optional.empty() : Optional.of(info(t));
    }

    private String componentHint(String name) {
        if (store.get(name) != null) {
            for (LogicalTensor t : logical.values()) {
                if (t.components().contains(name)) {
                    return " (it is a stored component of the quantized tensor '" + t.name() + "')";
                }
            }
        }
        return "";
    }

    /** {@return every tensor exactly as stored, including bitsandbytes component keys, in index and header order} */
    public List<StoredTensor> storedTensors() {
        List<StoredTensor> out = new ArrayList<>();
        for (TensorStore.Ref r : store.refs().values()) {
            out.add(new StoredTensor(r.name(), r.entry().dtype(), r.entry().shape(), r.entry().byteSize(), r.path(),
                    r.file().dataStart() + r.entry().begin()));
        }
        return Collections.unmodifiableList(out);
    }

    /**
     * {@return config.json as plain Java values in file order (String, Boolean, Long, BigInteger, Double, List, Map,
     * null), or empty when the checkpoint has none}
     */
    @SuppressWarnings("unchecked")
    public Optional<Map<String, Object>> config() {
        return config == null ? Optional.empty() : Optional.of((Map<String, Object>) config.toJava());
    }

    /**
     * A float tensor (dequantized if quantized) as float32.
     *
     * @param name the logical tensor's name
     * @return its elements, flattened in row-major order
     * @throws Dequant4jException of kind {@link Dequant4jException.Kind#INVALID_REQUEST} if there is no such float
     *                            tensor or it has more elements than an array holds
     */
    public float[] readFloats(String name) {
        LogicalTensor t = floatTensor(name);
        long n = t.numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, name, n + " elements do not fit in one array; read it in ranges or "
                    + "into a MemorySegment");
        }
        float[] out = new float[(int) n];
        readFloats(name, 0, out, 0, out.length);
        return out;
    }

    /**
     * Elements {@code [offset, offset + count)} of the flattened tensor as float32.
     *
     * @param name the logical tensor's name
     * @param offset the first element to read, in the flattened tensor
     * @param dst where to put them
     * @param dstOff the index in {@code dst} of the first element
     * @param count how many elements to read
     * @throws IndexOutOfBoundsException if the range is not inside the tensor or {@code dst}
     */
    public void readFloats(String name, long offset, float[] dst, int dstOff, int count) {
        LogicalTensor t = floatTensor(name);
        // Written so that no sum can overflow: offset and dstOff may be anything.
        if (offset < 0 || count < 0 || offset > t.numel() - count || dstOff < 0 || dstOff > dst.length - count) {
            throw new IndexOutOfBoundsException(count + " elements at " + offset + " of " + name + " (" + t.numel()
                    + " elements) into an array of " + dst.length + " at " + dstOff);
        }
        t.readF32(offset, dst, dstOff, count);
    }

    /**
     * The whole tensor as float32 in native byte order.
     *
     * @param name the logical tensor's name
     * @param dst where to put it, at least {@code numel * 4} bytes
     */
    public void readFloats(String name, MemorySegment dst) {
        read(name, DType.F32, dst);
    }

    /**
     * The whole tensor into {@code dst} in {@code dtype} (F32, F16 or BF16, native byte order), each value rounded
     * once, to nearest even, from its float32 value.
     *
     * @param name the logical tensor's name
     * @param dtype F32, F16 or BF16
     * @param dst where to put it, at least {@code numel} times the dtype's size
     * @throws IllegalArgumentException if {@code dtype} is not an output type or {@code dst} is too small
     */
    public void read(String name, DType dtype, MemorySegment dst) {
        if (!dtype.isOutputType()) {
            throw new IllegalArgumentException("dtype must be F32, F16 or BF16, not " + dtype);
        }
        LogicalTensor t = floatTensor(name);
        long n = t.numel();
        long need = n * (dtype.bits() / 8);
        if (dst.byteSize() < need) {
            throw new IllegalArgumentException(name + " needs " + need + " bytes, the segment has " + dst.byteSize());
        }
        float[] buf = new float[(int) Math.min(CHUNK, n)];
        short[] half = null;
        for (long off = 0; off < n; off += buf.length) {
            int c = (int) Math.min(buf.length, n - off);
            t.readF32(off, buf, 0, c);
            half = Kernels.storeRounded(buf, c, dtype, dst, off, half);
        }
    }

    /**
     * The raw bytes of a stored tensor (any dtype, including bitsandbytes components).
     *
     * @param storedName the key in the safetensors header, as {@link #storedTensors()} lists it
     * @return a copy of its bytes
     */
    public byte[] readBytes(String storedName) {
        return ref(storedName).bytes();
    }

    /**
     * A zero-copy view of a stored tensor's bytes.
     *
     * @param storedName the key in the safetensors header, as {@link #storedTensors()} lists it
     * @return a read-only segment, valid until this checkpoint is closed
     */
    public MemorySegment rawData(String storedName) {
        return ref(storedName).data().asReadOnly();
    }

    private TensorStore.Ref ref(String storedName) {
        checkOpen();
        TensorStore.Ref r = store.get(storedName);
        if (r == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, storedName, "no such stored tensor");
        }
        return r;
    }

    private LogicalTensor floatTensor(String name) {
        checkOpen();
        LogicalTensor t = logical.get(name);
        if (t == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, name, "no such tensor" + componentHint(name));
        }
        if (!t.isFloat()) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, name, "dtype " + t.dtype() + " is not a float type");
        }
        return t;
    }

    private void checkOpen() {
        if (closed) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, path, "checkpoint is closed");
        }
    }

    /** Releases the mappings. Idempotent. */
    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            store.close();
        }
    }

    @Override
    public String toString() {
        return "Checkpoint[" + path + ", " + infos.size() + " tensors]";
    }
}

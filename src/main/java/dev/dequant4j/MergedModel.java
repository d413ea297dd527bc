package dev.dequant4j;

import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.lora.MergedTensors;
import dev.dequant4j.internal.safetensors.TensorEntry;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * A checkpoint with LoRA adapters merged, read tensor by tensor on the CPU without exporting anything: for a Java
 * application that loads a QLoRA fine-tune straight from the bitsandbytes checkpoint and its adapter.
 *
 * <pre>{@code
 * try (Checkpoint base = Checkpoint.open(Path.of("llama-3-8b-bnb-4bit"));
 *      LoraAdapter lora = LoraAdapter.open(Path.of("my-finetune"));
 *      MergedModel model = MergedModel.of(base, List.of(lora))) {
 *     float[] q = model.readFloats("model.layers.0.self_attn.q_proj.weight");
 * }
 * }</pre>
 *
 * <p>The values are exactly those an {@link Export} of the same base and adapters writes: the same merge plan (every
 * adapter key checked against the base when this is created), fp32 arithmetic in the same order, one rounding to
 * the dtype asked for. To merge into the original 16-bit weights (Unsloth's {@code merged_16bit}), pass that
 * checkpoint as the base. Unlike an export, reading does not refuse non-finite values. The base and adapters must
 * stay open while this is used; reads are thread-safe and each reads the adapter payloads it needs anew, so memory
 * stays at about one tensor per reader.
 */
public final class MergedModel implements AutoCloseable {
    private static final int CHUNK = 1 << 16;

    private final Checkpoint base;
    private final MergedTensors tensors;
    private volatile boolean closed;

    private MergedModel(Checkpoint base, MergedTensors tensors) {
        this.base = base;
        this.tensors = tensors;
    }

    /**
     * Maps the adapters, applied in the order given, onto the base.
     *
     * @param base the checkpoint; it must stay open while this model is used
     * @param adapters the adapters, applied in this order; they must stay open while this model is used
     * @return the merged view; nothing is read until a tensor is
     * @throws Dequant4jException naming the adapter file and key, for anything that does not fit the base
     */
    public static MergedModel of(Checkpoint base, List<LoraAdapter> adapters) {
        return of(base, adapters, TiedEmbeddings.AS_TRAINED);
    }

    /**
     * Maps the adapters, applied in the order given, onto the base, with {@code tied} deciding what an adapter on
     * a tied embedding or output layer becomes.
     *
     * @param base the checkpoint; it must stay open while this model is used
     * @param adapters the adapters, applied in this order; they must stay open while this model is used
     * @param tied what an adapter on one side of a tied pair becomes
     * @return the merged view; nothing is read until a tensor is
     * @throws Dequant4jException naming the adapter file and key, for anything that does not fit the base
     */
    public static MergedModel of(Checkpoint base, List<LoraAdapter> adapters, TiedEmbeddings tied) {
        return new MergedModel(base, MergedTensors.build(base, List.copyOf(adapters),
                java.util.Objects.requireNonNull(tied, "tied")));
    }

    /**
     * The tensor names after merging: the base's logical tensors, in its order, then any output layer that an
     * adapter trained separately from the embedding it was tied to (written as its own tensor).
     *
     * @return the names, in output order
     */
    public List<String> tensorNames() {
        checkOpen();
        return tensors.names();
    }

    /**
     * The shape after merging: the base's, or a resized vocabulary matrix's new one.
     *
     * @param name a name from {@link #tensorNames()}
     * @return a copy of the shape
     */
    public long[] shape(String name) {
        checkOpen();
        return tensors.shape(name);
    }

    /**
     * Whether an adapter changes this tensor.
     *
     * @param name a name from {@link #tensorNames()}
     * @return true if an adapter changes it
     */
    public boolean isMerged(String name) {
        checkOpen();
        return tensors.changed(name);
    }

    /**
     * A float tensor, dequantized and merged, as float32.
     *
     * @param name a name from {@link #tensorNames()}
     * @return its elements, flattened in row-major order
     * @throws Dequant4jException of kind {@link Dequant4jException.Kind#INVALID_REQUEST} if there is no such float
     *                            tensor or it has more elements than an array holds
     */
    public float[] readFloats(String name) {
        checkOpen();
        long n = numel(name);
        if (n > Integer.MAX_VALUE - 8) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, base.path(), name, n + " elements do not fit in one array; read it into a"
                    + " MemorySegment");
        }
        float[] out = new float[(int) n];
        tensors.produce(name, CHUNK, (start, values, count) -> System.arraycopy(values, 0, out, (int) start, count));
        return out;
    }

    /**
     * The whole tensor into {@code dst} in {@code dtype} (F32, F16 or BF16, native byte order), each value rounded
     * once, to nearest even, from its merged float32 value.
     *
     * @param name a name from {@link #tensorNames()}
     * @param dtype F32, F16 or BF16
     * @param dst where to put it, at least {@code numel} times the dtype's size
     * @throws IllegalArgumentException if {@code dtype} is not an output type or {@code dst} is too small
     */
    public void read(String name, DType dtype, MemorySegment dst) {
        checkOpen();
        if (!dtype.isOutputType()) {
            throw new IllegalArgumentException("dtype must be F32, F16 or BF16, not " + dtype);
        }
        long need = dtype.byteSize(numel(name));
        if (dst.byteSize() < need) {
            throw new IllegalArgumentException(name + " needs " + need + " bytes, the segment has " + dst.byteSize());
        }
        short[][] half = {null};
        tensors.produce(name, CHUNK, (start, values, count) ->
                half[0] = Kernels.storeRounded(values, count, dtype, dst, start, half[0]));
    }

    private long numel(String name) {
        return TensorEntry.numel(tensors.shape(name));
    }

    private void checkOpen() {
        if (closed) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, base.path(), "merged model is closed");
        }
    }

    /** Marks this view closed; the base and the adapters stay open (their owner closes them). */
    @Override
    public void close() {
        closed = true;
    }

    @Override
    public String toString() {
        return "MergedModel[" + base.path() + ", " + tensors.plan().targets().size() + " adapter modules]";
    }
}

package dev.dequant4j.internal.lora;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TiedEmbeddings;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.safetensors.TensorEntry;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The tensors of a base checkpoint with adapters merged, produced on demand in float32 row chunks with the same
 * {@link MergePlan} and {@link MergeRunner} as an export, so the values are the ones an export rounds.
 */
public final class MergedTensors {
    /** Receives consecutive chunks of whole rows: elements {@code [start, start + count)} in {@code values}. */
    public interface ChunkSink {
        void accept(long start, float[] values, int count);
    }

    private final Checkpoint base;
    private final Map<String, LogicalTensor> logical;
    private final MergePlan plan;
    private final List<String> names;
    private final CpuKernels kernels = Kernels.get();

    private MergedTensors(Checkpoint base, MergePlan plan) {
        this.base = base;
        this.logical = Internals.checkpoint().logical(base);
        this.plan = plan;
        List<String> n = new ArrayList<>(logical.keySet());
        n.addAll(plan.untied().keySet());
        this.names = Collections.unmodifiableList(n);
    }

    /** Maps and checks the adapters against the base (see {@link MergePlan#build}). */
    public static MergedTensors build(Checkpoint base, List<LoraAdapter> adapters, TiedEmbeddings tied) {
        return new MergedTensors(base, MergePlan.build(base, adapters, tied));
    }

    public MergePlan plan() {
        return plan;
    }

    /** The base's logical tensors in its order, then the output layers the adapters untied. */
    public List<String> names() {
        return names;
    }

    /** The tensor that holds {@code name}'s base values (an untied output layer's is its embedding). */
    public LogicalTensor source(String name) {
        String embedding = plan.untied().get(name);
        LogicalTensor t = logical.get(embedding != null ? embedding : name);
        if (t == null) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, base.path(), name, "no such tensor");
        }
        return t;
    }

    /** The shape after merging (a resized vocabulary matrix has its new row count). */
    public long[] shape(String name) {
        long[] r = plan.resizedShape(name);
        return r != null ? r : source(name).shape();
    }

    /** True if an adapter changes the tensor. */
    public boolean changed(String name) {
        return plan.tensors().contains(name);
    }

    /**
     * Produces the merged tensor in chunks of whole rows of at most {@code maxElements} (at least one row), in
     * order. The adapters' payloads for the tensor are read once per call.
     */
    public void produce(String name, int maxElements, ChunkSink sink) {
        LogicalTensor src = source(name);
        if (!src.isFloat()) {
            throw new Dequant4jException(Kind.INVALID_REQUEST, base.path(), name, "dtype " + src.dtype() + " is not a float type");
        }
        long[] shape = shape(name);
        long numel = TensorEntry.numel(shape);
        long rows = MergeOp.rows(shape);
        long cols = MergeOp.cols(shape, numel);
        if (cols > Integer.MAX_VALUE - 8) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, base.path(), name, "rows of " + cols + " elements are too long to merge");
        }
        List<MergeOp> ops = plan.ops(name);
        MergeRunner runner = ops.isEmpty() ? null : new MergeRunner(ops, rows, (int) cols, kernels);
        int chunkRows = (int) Math.max(1, Math.min(rows, maxElements / Math.max(1, cols)));
        if (runner != null && runner.needsPrepass()) {
            runner.prepass((row0, n, w) -> readBase(src, row0 * cols, w, 0, (int) (n * cols)), chunkRows);
        }
        float[] w = new float[(int) Math.min(numel, (long) chunkRows * Math.max(1, cols))];
        for (long r0 = 0; r0 < rows; r0 += chunkRows) {
            int n = (int) Math.min(chunkRows, rows - r0);
            int count = (int) (n * cols);
            readBase(src, r0 * cols, w, 0, count);
            if (runner != null) {
                runner.apply(r0, n, w, 0);
            }
            sink.accept(r0 * cols, w, count);
        }
    }

    /**
     * Elements {@code [start, start + count)} of a merge's base: the source's values, and zeros past its end (the
     * rows a vocabulary resize adds, which its replacement overwrites; as zeros they count whole in the change
     * statistics).
     */
    public static void readBase(LogicalTensor src, long start, float[] dst, int off, int count) {
        long have = Math.max(0, Math.min(count, src.numel() - start));
        if (have > 0) {
            src.readF32(start, dst, off, (int) have);
        }
        Arrays.fill(dst, off + (int) have, off + count, 0f);
    }
}

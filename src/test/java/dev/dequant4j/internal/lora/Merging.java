package dev.dequant4j.internal.lora;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.cpu.ScalarKernels;
import java.util.List;
import java.util.function.UnaryOperator;

/** Runs a plan's steps for one tensor with the scalar reference runner, in row chunks, as the export layer does. */
public final class Merging {
    private Merging() {}

    /** The merged float32 values of {@code tensor}, its base read from {@code base} in chunks of {@code chunkRows}. */
    public static float[] merge(Checkpoint base, String tensor, List<MergeOp> ops, int chunkRows) {
        return merge(base, tensor, ops, chunkRows, UnaryOperator.identity());
    }

    /** As {@link #merge(Checkpoint, String, List, int)}, with every base chunk passed through {@code baseMap} first. */
    public static float[] merge(Checkpoint base, String tensor, List<MergeOp> ops, int chunkRows,
                                UnaryOperator<float[]> baseMap) {
        TensorInfo info = base.tensor(tensor);
        long rows = info.shape()[0];
        int cols = (int) (info.numel() / rows);
        MergeRunner runner = new MergeRunner(ops, rows, cols, ScalarKernels.INSTANCE);
        MergeRunner.RowSource src = (r0, n, w) -> {
            base.readFloats(tensor, r0 * cols, w, 0, n * cols);
            float[] mapped = baseMap.apply(w);
            if (mapped != w) {
                System.arraycopy(mapped, 0, w, 0, n * cols);
            }
        };
        if (runner.needsPrepass()) {
            runner.prepass(src, chunkRows);
        }
        float[] out = new float[(int) info.numel()];
        float[] w = new float[chunkRows * cols];
        for (long r0 = 0; r0 < rows; r0 += chunkRows) {
            int n = (int) Math.min(chunkRows, rows - r0);
            src.read(r0, n, w);
            runner.apply(r0, n, w, 0);
            System.arraycopy(w, 0, out, (int) (r0 * cols), n * cols);
        }
        return out;
    }
}

package dev.dequant4j.internal.lora;

import java.util.Arrays;

/**
 * One step of merging adapters into a base tensor, as data, so that every backend (the scalar reference, the Vector
 * API kernels, CUDA) runs the same steps. A tensor's steps run in order on its float32 values, viewed as a
 * {@code rows x cols} matrix with {@code rows = shape[0]} and {@code cols = numel / rows} (a 1-D tensor is one column:
 * {@code rows = shape[0], cols = 1}). The result is rounded once to the output dtype at the end.
 *
 * <p>LoRA deltas are always given in row form, {@code delta[i, :] = sum_k left[i, k] * right[k, :]}: for a plain
 * linear weight {@code left = B} ({@code out x r}) and {@code right = A} ({@code r x in}); for a transposed delta
 * (embeddings, {@code fan_in_fan_out}) {@code left = A^T} and {@code right = B^T}.
 */
public sealed interface MergeOp {
    /** Rows of a tensor's merge view: {@code shape[0]}, 1 for a scalar. */
    static long rows(long[] shape) {
        return shape.length == 0 ? 1 : shape[0];
    }

    /** Columns of a tensor's merge view: {@code numel / rows}, 0 for a tensor without rows. */
    static long cols(long[] shape, long numel) {
        long r = rows(shape);
        return r == 0 ? 0 : numel / r;
    }

    /**
     * Why {@code op} cannot run on a {@code rows x cols} tensor (its arrays are sized for another shape), or null if
     * it fits: every backend checks this before running a step, so a plan built for the wrong layout fails with one
     * line instead of an index out of bounds in a kernel.
     */
    static String misfit(MergeOp op, long rows, long cols) {
        long numel = rows * cols;
        return switch (op) {
            case Lora l -> lowRankMisfit(l.left(), l.right(), l.r(), rows, cols);
            case Dora d -> {
                String m = lowRankMisfit(d.left(), d.right(), d.r(), rows, cols);
                long units = d.perColumn() ? cols : rows;
                yield m != null || d.magnitude().length == units ? m : "magnitude has " + d.magnitude().length
                        + " values for " + units + (d.perColumn() ? " columns" : " rows");
            }
            case AddScaled a -> a.values().length == numel ? null
                    : a.values().length + " values for " + numel + " elements";
            case Replace r -> r.values().numel() == numel ? null
                    : "replacement has " + r.values().numel() + " values for " + numel + " elements";
            case ReplaceRows rr -> (long) rr.rows().length * cols == rr.values().length ? null
                    : rr.values().length + " values for " + rr.rows().length + " rows of " + cols;
        };
    }

    private static String lowRankMisfit(float[] left, float[] right, int r, long rows, long cols) {
        if (r < 1) {
            return "rank " + r;
        }
        if (left.length != rows * r || right.length != r * cols) {
            return "left has " + left.length + " values and right " + right.length + "; a " + rows + " x " + cols
                    + " tensor at rank " + r + " needs " + rows * r + " and " + r * cols;
        }
        return null;
    }

    /**
     * {@code W = W + scale * (left @ right)}: per element, {@code acc = left[i,0]*right[0,c]}, then
     * {@code acc = acc + left[i,k]*right[k,c]} for k = 1..r-1, then {@code W = W + f32(acc * scale)}; every operation
     * a single binary32 rounding, never fused (see {@code CpuKernels.loraDelta}).
     *
     * @param adapter the adapter's name or index, for statistics and messages
     */
    record Lora(String adapter, float[] left, float[] right, int r, float scale) implements MergeOp {
        @Override
        public String toString() {
            return "Lora[" + adapter + ", r=" + r + ", scale=" + scale + "]";
        }
    }

    /**
     * DoRA (PEFT's {@code merge_safe}): {@code Wd = W + scale * (left @ right)} as in {@link Lora}; then for each
     * output unit {@code o} (a row, or with {@code perColumn} a column: embeddings and {@code fan_in_fan_out}
     * weights), {@code norm[o] = (float) sqrt(sum of Wd^2 over the unit, accumulated in double in index order)},
     * {@code factor = f32(magnitude[o] / norm[o])}, {@code W = f32(factor * Wd)}.
     */
    record Dora(String adapter, float[] left, float[] right, int r, float scale, float[] magnitude, boolean perColumn)
            implements MergeOp {
        @Override
        public String toString() {
            return "Dora[" + adapter + ", r=" + r + ", scale=" + scale + (perColumn ? ", per column" : "") + "]";
        }
    }

    /** {@code W[i] = W[i] + f32(values[i] * scale)} for a 1-D tensor (PEFT's {@code lora_bias}). */
    record AddScaled(String adapter, float[] values, float scale) implements MergeOp {
        @Override
        public String toString() {
            return "AddScaled[" + adapter + ", scale=" + scale + "]";
        }
    }

    /** {@code W = values} (a {@code modules_to_save} copy or a replacement bias); {@code values} has numel entries. */
    record Replace(String adapter, ValuesSource values) implements MergeOp {
        @Override
        public String toString() {
            return "Replace[" + adapter + "]";
        }
    }

    /** {@code W[rows[j], :] = values[j, :]} (PEFT trainable tokens: rows are replaced, not added to). */
    record ReplaceRows(String adapter, long[] rows, float[] values) implements MergeOp {
        @Override
        public String toString() {
            return "ReplaceRows[" + adapter + ", " + rows.length + " rows: " + Arrays.toString(
                    Arrays.copyOf(rows, Math.min(rows.length, 8))) + "]";
        }
    }

    /** Float32 values of a tensor, read in ranges (large replacements are not held in memory). */
    interface ValuesSource {
        long numel();

        void readF32(long start, float[] dst, int dstOff, int count);
    }
}

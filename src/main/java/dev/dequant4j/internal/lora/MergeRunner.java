package dev.dequant4j.internal.lora;

import dev.dequant4j.internal.cpu.CpuKernels;
import java.util.List;

/**
 * Runs a tensor's {@link MergeOp}s on row chunks of its float32 values: the CPU reference for every backend. A
 * per-column DoRA step needs the norms of whole columns, which depend on every row: {@link #prepass} computes them
 * first from a second read of the base rows.
 */
public final class MergeRunner {
    /** Reads base rows {@code [row0, row0 + rows)} as float32 into {@code w}. */
    public interface RowSource {
        void read(long row0, int rows, float[] w);
    }

    private final List<MergeOp> ops;
    private final long rows;
    private final int cols;
    private final CpuKernels kernels;
    private final float[][] columnNorms;

    /**
     * @throws IllegalArgumentException if a step's arrays do not fit a {@code rows x cols} tensor (the message says
     *                                  which step and how)
     */
    public MergeRunner(List<MergeOp> ops, long rows, int cols, CpuKernels kernels) {
        for (MergeOp op : ops) {
            String misfit = MergeOp.misfit(op, rows, cols);
            if (misfit != null) {
                throw new IllegalArgumentException(op + ": " + misfit);
            }
        }
        this.ops = List.copyOf(ops);
        this.rows = rows;
        this.cols = cols;
        this.kernels = kernels;
        this.columnNorms = new float[ops.size()][];
    }

    /** True if {@link #prepass} must run before {@link #apply}. */
    public boolean needsPrepass() {
        for (MergeOp op : ops) {
            if (op instanceof MergeOp.Dora d && d.perColumn()) {
                return true;
            }
        }
        return false;
    }

    /** Computes the column norms of every per-column DoRA step, reading the base in chunks of {@code chunkRows}. */
    public void prepass(RowSource base, int chunkRows) {
        for (int j = 0; j < ops.size(); j++) {
            if (!(ops.get(j) instanceof MergeOp.Dora d) || !d.perColumn()) {
                continue;
            }
            double[] sums = new double[cols];
            float[] w = new float[chunkRows * cols];
            for (long r0 = 0; r0 < rows; r0 += chunkRows) {
                int n = (int) Math.min(chunkRows, rows - r0);
                base.read(r0, n, w);
                for (int i = 0; i < j; i++) {
                    applyOne(i, r0, n, w, 0);
                }
                kernels.loraDelta(w, 0, n, cols, d.left(), (int) (r0 * d.r()), d.right(), d.r(), d.scale());
                for (int i = 0; i < n; i++) {
                    int b = i * cols;
                    for (int c = 0; c < cols; c++) {
                        double v = w[b + c];
                        sums[c] += v * v;
                    }
                }
            }
            float[] norms = new float[cols];
            for (int c = 0; c < cols; c++) {
                norms[c] = (float) Math.sqrt(sums[c]);
            }
            columnNorms[j] = norms;
        }
    }

    /** Applies every step to rows {@code [row0, row0 + n)} held in {@code w} from {@code off}. */
    public void apply(long row0, int n, float[] w, int off) {
        for (int j = 0; j < ops.size(); j++) {
            applyOne(j, row0, n, w, off);
        }
    }

    private void applyOne(int j, long row0, int n, float[] w, int off) {
        switch (ops.get(j)) {
            case MergeOp.Lora l -> kernels.loraDelta(w, off, n, cols, l.left(), (int) (row0 * l.r()), l.right(), l.r(),
                    l.scale());
            case MergeOp.Dora d -> {
                kernels.loraDelta(w, off, n, cols, d.left(), (int) (row0 * d.r()), d.right(), d.r(), d.scale());
                if (d.perColumn()) {
                    float[] norms = columnNorms[j];
                    if (norms == null) {
                        throw new IllegalStateException("prepass() must run before a per-column DoRA step");
                    }
                    float[] m = d.magnitude();
                    for (int i = 0; i < n; i++) {
                        int b = off + i * cols;
                        for (int c = 0; c < cols; c++) {
                            float factor = m[c] / norms[c];
                            w[b + c] = factor * w[b + c];
                        }
                    }
                } else {
                    for (int i = 0; i < n; i++) {
                        int b = off + i * cols;
                        double s = 0;
                        for (int c = 0; c < cols; c++) {
                            double v = w[b + c];
                            s += v * v;
                        }
                        float factor = d.magnitude()[(int) (row0 + i)] / (float) Math.sqrt(s);
                        for (int c = 0; c < cols; c++) {
                            w[b + c] = factor * w[b + c];
                        }
                    }
                }
            }
            case MergeOp.AddScaled a -> {
                long start = row0 * cols;
                for (int i = 0; i < n * cols; i++) {
                    float t = a.values()[(int) (start + i)] * a.scale();
                    w[off + i] = w[off + i] + t;
                }
            }
            case MergeOp.Replace rp -> rp.values().readF32(row0 * cols, w, off, n * cols);
            case MergeOp.ReplaceRows rr -> {
                long[] idx = rr.rows();
                for (int j2 = 0; j2 < idx.length; j2++) {
                    long r = idx[j2];
                    if (r >= row0 && r < row0 + n) {
                        System.arraycopy(rr.values(), j2 * cols, w, off + (int) (r - row0) * cols, cols);
                    }
                }
            }
        }
    }
}

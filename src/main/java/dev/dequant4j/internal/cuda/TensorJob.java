package dev.dequant4j.internal.cuda;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.Int8Tensor;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.bnb.PlainTensor;
import dev.dequant4j.internal.lora.MergeOp;
import java.util.ArrayList;
import java.util.List;

/**
 * What {@link CudaBackend#materialize} does with one tensor, decided and checked on the host before any device
 * work: the base (the tensor, or the values of its last {@link MergeOp.Replace}, which makes every earlier step
 * irrelevant), the remaining steps, the {@code rows x cols} view of {@link MergeOp}, and the chunks.
 *
 * @param replacement the values of the last Replace step, which then are the base; null if there is none
 * @param steps       the steps after that Replace (all of them without one)
 */
record TensorJob(LogicalTensor tensor, MergeOp.ValuesSource replacement, List<MergeOp> steps, DType out, long numel,
                 long rows, long cols) {
    /** Elements per launch of the fused kernel (its 32-bit indexing). */
    static final long MAX_LAUNCH_ELEMENTS = 1L << 30;
    /** Element chunks of the dequant-only path start at multiples of this (the kernels' 16/32-element vectors). */
    static final long ELEMENT_ALIGN = 1024;

    /** A run of whole rows {@code [row0, row0 + rows)} = elements {@code [elem0, elem0 + count)}. */
    record Chunk(long elem0, long count, long row0, long rows) {}

    /**
     * Checks everything the kernels would otherwise trip over and builds the plan.
     *
     * @throws Dequant4jException naming the tensor, for an unusable dtype, a wrong destination size, a step whose
     *                            arrays do not fit the tensor, or more steps than one launch takes
     */
    static TensorJob of(LogicalTensor tensor, List<MergeOp> ops, DType out, long dstBytes) {
        if (!out.isOutputType()) {
            throw fail(tensor, "output dtype " + out + " is not F16, BF16 or F32");
        }
        if (!tensor.isFloat()) {
            throw fail(tensor, "dtype " + tensor.dtype() + " cannot be materialized as floats");
        }
        long numel = tensor.numel();
        long want = out.byteSize(numel);
        if (dstBytes != want) {
            throw fail(tensor, "destination holds " + dstBytes + " bytes, the tensor needs " + want + " ("
                    + numel + " x " + out + ")");
        }
        long[] shape = tensor.shape();
        long rows = MergeOp.rows(shape);
        long cols = MergeOp.cols(shape, numel);
        int last = -1;
        for (int i = 0; i < ops.size(); i++) {
            if (ops.get(i) instanceof MergeOp.Replace) {
                last = i;
            }
        }
        MergeOp.ValuesSource replacement = last >= 0 ? ((MergeOp.Replace) ops.get(last)).values() : null;
        List<MergeOp> steps = List.copyOf(ops.subList(last + 1, ops.size()));
        if (replacement != null && replacement.numel() != numel) {
            throw fail(tensor, "replacement has " + replacement.numel() + " values for " + numel + " elements");
        }
        if (steps.size() > CudaKernels.MAX_STEPS) {
            throw fail(tensor, steps.size() + " merge steps; the CUDA backend takes at most " + CudaKernels.MAX_STEPS
                    + " per tensor (use the CPU backend)");
        }
        if (!steps.isEmpty() && cols > MAX_LAUNCH_ELEMENTS) {
            throw fail(tensor, "rows of " + cols + " elements are longer than the CUDA merge kernel takes ("
                    + MAX_LAUNCH_ELEMENTS + ")");
        }
        for (MergeOp op : steps) {
            check(tensor, op, rows, cols);
        }
        return new TensorJob(tensor, replacement, steps, out, numel, rows, cols);
    }

    private static void check(LogicalTensor t, MergeOp op, long rows, long cols) {
        if (op instanceof MergeOp.Replace) {
            throw new IllegalStateException("Replace steps are folded into the base");
        }
        String misfit = MergeOp.misfit(op, rows, cols);
        if (misfit != null) {
            throw fail(t, op + ": " + misfit);
        }
    }

    private static Dequant4jException fail(LogicalTensor t, String detail) {
        return new Dequant4jException(Kind.BACKEND, null, t.name(), detail);
    }

    /** The kernel's source kind: 4-bit, int8, or plain values (a replacement is plain F32). */
    int sourceKind() {
        if (replacement != null) {
            return CudaKernels.SRC_PLAIN;
        }
        return switch (tensor) {
            case FourBitTensor f -> CudaKernels.SRC_4BIT;
            case Int8Tensor i -> CudaKernels.SRC_INT8;
            case PlainTensor p -> CudaKernels.SRC_PLAIN;
        };
    }

    /** The stored element type of a plain base (F32 for a replacement). */
    DType plainDtype() {
        return replacement != null ? DType.F32 : tensor.storedDtype();
    }

    /** Bytes of base data a chunk of {@code count} elements from {@code elem0} stages (its packed bytes, ...). */
    long inBytes(long elem0, long count) {
        if (count == 0) {
            return 0;
        }
        return switch (sourceKind()) {
            case CudaKernels.SRC_4BIT -> ((elem0 + count - 1) >>> 1) - (elem0 >>> 1) + 1;
            case CudaKernels.SRC_INT8 -> count;
            default -> plainDtype().byteSize(count);
        };
    }

    /** Largest staged input per element, for sizing buffers. */
    long inBytesPerElement() {
        return switch (sourceKind()) {
            case CudaKernels.SRC_4BIT, CudaKernels.SRC_INT8 -> 1;
            default -> plainDtype().bits() / 8;
        };
    }

    boolean hasSteps() {
        return !steps.isEmpty();
    }

    /** The steps' device format needs DoRA partial sums: the number of per-row and per-column DoRA steps. */
    int doraSteps(boolean perColumn) {
        int n = 0;
        for (MergeOp op : steps) {
            if (op instanceof MergeOp.Dora d && d.perColumn() == perColumn) {
                n++;
            }
        }
        return n;
    }

    /**
     * Rows or elements per chunk for a budget of {@code maxElements} per chunk: without steps, element chunks (a
     * multiple of {@link #ELEMENT_ALIGN}); with steps, whole rows (at least one).
     */
    List<Chunk> chunks(long maxElements) {
        List<Chunk> out = new ArrayList<>();
        if (numel == 0) {
            return out;
        }
        if (!hasSteps()) {
            long step = Math.max(ELEMENT_ALIGN, Math.min(maxElements, MAX_LAUNCH_ELEMENTS) / ELEMENT_ALIGN
                    * ELEMENT_ALIGN);
            for (long e = 0; e < numel; e += step) {
                long n = Math.min(step, numel - e);
                out.add(new Chunk(e, n, -1, -1));
            }
            return out;
        }
        long perChunk = Math.max(1, Math.min(maxElements, MAX_LAUNCH_ELEMENTS) / cols);
        for (long r = 0; r < rows; r += perChunk) {
            long n = Math.min(perChunk, rows - r);
            out.add(new Chunk(r * cols, n * cols, r, n));
        }
        return out;
    }
}

package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.QuantKind;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.safetensors.TensorEntry;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.util.List;

/**
 * A bitsandbytes 4-bit weight (NF4 or FP4, with or without double quantization), dequantized exactly as bnb's
 * {@code dequantize_4bit}: blocks over the flattened tensor, high nibble first, the built-in code table, and with
 * double quantization {@code absmax = f32(f32(nested_quant_map[code] * nested_absmax[j / 256]) + offset)}.
 *
 * @param nestedMap    the 256-entry dynamic map, or null without double quantization
 * @param nestedAbsmax the second-level scales, or null without double quantization
 * @param absmaxTransposed the absmax is stored {@code [in / blocksize, out]} (bitsandbytes' CPU repacking, saved
 *                         after a forward pass) rather than in block order
 */
public record FourBitTensor(String name, QuantState state, long[] shape, TensorStore.Ref weight, TensorStore.Ref absmax,
                            float[] nestedMap, float[] nestedAbsmax, List<String> components, long storedBytes,
                            boolean absmaxTransposed)
        implements LogicalTensor {
    @Override
    public QuantKind kind() {
        return state.quantType().equals("nf4") ? QuantKind.NF4 : QuantKind.FP4;
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public long numel() {
        return TensorEntry.numel(shape);
    }

    @Override
    public DType dtype() {
        return state.dtype();
    }

    @Override
    public DType storedDtype() {
        return weight.entry().dtype();
    }

    @Override
    public int blocksize() {
        return state.blocksize();
    }

    @Override
    public boolean doubleQuant() {
        return state.nested();
    }

    @Override
    public boolean isFloat() {
        return true;
    }

    /** Number of 4-bit blocks. */
    public long blocks() {
        return (numel() + state.blocksize() - 1) / state.blocksize();
    }

    /** The float32 scales of blocks {@code [firstBlock, firstBlock + count)}. */
    public float[] absmax(long firstBlock, int count) {
        float[] out = new float[count];
        absmax(firstBlock, count, out, Scratch.get());
        return out;
    }

    /** Writes the float32 scales of blocks {@code [firstBlock, firstBlock + count)} into {@code out[0, count)}. */
    private void absmax(long firstBlock, int count, float[] out, Scratch scratch) {
        if (state.nested()) {
            byte[] codes = scratch.codes(count);
            absmax.copyBytes(firstBlock, codes, 0, count);
            // The kernel indexes the nested scales from the 256-block of firstBlock, so it gets them from there.
            int nestedFirst = (int) (firstBlock / QuantState.NESTED_BLOCKSIZE);
            int nestedEnd = (int) ((firstBlock + count - 1) / QuantState.NESTED_BLOCKSIZE) + 1;
            float[] nested = nestedAbsmax;
            if (nestedFirst != 0) {
                nested = scratch.nested(nestedEnd - nestedFirst);
                System.arraycopy(nestedAbsmax, nestedFirst, nested, 0, nestedEnd - nestedFirst);
            }
            Kernels.get().absmaxDoubleQuant(codes, 0, count, nestedMap, nested, firstBlock,
                    state.nestedOffset(), out);
        } else if (absmaxTransposed) {
            transposedAbsmax(firstBlock, count, out);
        } else {
            switch (absmax.entry().dtype()) {
                case F32 -> absmax.copyFloats(firstBlock * 4, out, 0, count);
                case F16, BF16 -> {
                    short[] tmp = scratch.halves(count);
                    absmax.copyShorts(firstBlock * 2, tmp, 0, count);
                    if (absmax.entry().dtype() == DType.F16) {
                        Kernels.get().f16ToF32(tmp, 0, out, 0, count);
                    } else {
                        Kernels.get().bf16ToF32(tmp, 0, out, 0, count);
                    }
                }
                default -> throw new IllegalStateException("absmax dtype checked at open");
            }
        }
    }

    /**
     * Block {@code b = row * perRow + j} of an absmax stored {@code [perRow, rows]} is element {@code j * rows + row}:
     * each one is read on its own (an absmax saved this way is rare, and small next to its weight).
     */
    private void transposedAbsmax(long firstBlock, int count, float[] out) {
        long rows = shape[0];
        long perRow = shape[1] / state.blocksize();
        DType d = absmax.entry().dtype();
        short[] half = new short[count];
        for (int k = 0; k < count; k++) {
            long b = firstBlock + k;
            long at = (b % perRow) * rows + b / perRow;
            if (d == DType.F32) {
                absmax.copyFloats(at * 4, out, k, 1);
            } else {
                absmax.copyShorts(at * 2, half, k, 1);
            }
        }
        switch (d) {
            case F32 -> { }
            case F16 -> Kernels.get().f16ToF32(half, 0, out, 0, count);
            case BF16 -> Kernels.get().bf16ToF32(half, 0, out, 0, count);
            default -> throw new IllegalStateException("absmax dtype checked at open");
        }
    }

    @Override
    public void readF32(long start, float[] dst, int dstOff, int count) {
        Checks.range(this, start, count);
        Scratch scratch = Scratch.get();
        for (int done = 0; done < count; ) {
            int n = Scratch.piece(start + done, count - done);
            readPiece(start + done, dst, dstOff + done, n, scratch);
            done += n;
        }
    }

    private void readPiece(long start, float[] dst, int dstOff, int count, Scratch scratch) {
        int shift = state.blockShift();
        long end = start + count;
        long b0 = start >>> shift;
        int nb = (int) (((end - 1) >>> shift) - b0 + 1);
        float[] scales = scratch.scales(nb);
        absmax(b0, nb, scales, scratch);
        long byte0 = start >>> 1;
        int nbytes = (int) (((end - 1) >>> 1) - byte0 + 1);
        byte[] packed = scratch.packed(nbytes);
        weight.copyBytes(byte0, packed, 0, nbytes);
        CpuKernels k = Kernels.get();
        k.dequant4bit(state.code(), packed, start, count, scales, shift, dst, dstOff);
    }
}

package dev.dequant4j.internal.cpu;

/**
 * The CPU hot loops, behind one interface so that the Vector API implementation can replace the scalar one. The
 * scalar implementation is the reference: every other implementation must give the same bits (all operations are
 * single IEEE binary32 operations in a fixed order, never fused).
 */
public interface CpuKernels {
    /** A short name for logs and benchmarks: "scalar", "panama-512", ... */
    String name();

    /**
     * bitsandbytes 4-bit decode: {@code out[outOff + i] = f32(code[nib(start + i)] * absmax[blockOf(start + i)])}
     * for {@code i < count}. {@code packed[0]} holds the byte of element {@code start} (element {@code 2j} is the high
     * nibble of byte {@code j}); {@code absmax[0]} is the scale of the block of element {@code start}; blocks are
     * {@code 1 << blockShift} consecutive flattened elements.
     */
    void dequant4bit(float[] code, byte[] packed, long start, int count, float[] absmax, int blockShift,
                     float[] out, int outOff);

    /**
     * Double-quant absmax: {@code out[i] = f32(f32(nestedMap[codes[codesOff + i] & 0xFF] * nestedAbsmax[(firstBlock
     * + i) / 256 - nestedBase]) + offset)}, with {@code nestedBase = firstBlock / 256}.
     */
    void absmaxDoubleQuant(byte[] codes, int codesOff, int count, float[] nestedMap, float[] nestedAbsmax,
                           long firstBlock, float offset, float[] out);

    /** LLM.int8 row: {@code out[outOff + i] = f32(f32(q[qOff + i] * scb) * (1/127f))}. */
    void dequantInt8(byte[] q, int qOff, int count, float scb, float[] out, int outOff);

    void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n);

    void bf16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n);

    /** Round to nearest even, as {@code Float.floatToFloat16}. */
    void f32ToF16(float[] src, int srcOff, short[] dst, int dstOff, int n);

    /** Round to nearest even, as PyTorch's {@code c10::BFloat16}; NaN becomes 0x7FC0. */
    void f32ToBf16(float[] src, int srcOff, short[] dst, int dstOff, int n);

    /**
     * LoRA delta, added in place: for each row {@code i < rows} and column {@code c < cols},
     * <pre>
     *   acc = f32(left[i*r + 0] * right[0*cols + c])
     *   acc = f32(acc + f32(left[i*r + k] * right[k*cols + c]))   for k = 1 .. r-1, in order
     *   w[wOff + i*cols + c] = f32(w[...] + f32(acc * scale))
     * </pre>
     * {@code left} is {@code rows x r} (from {@code leftOff}), {@code right} is {@code r x cols}; both row-major.
     * This is PEFT's {@code W + (B @ A) * scaling} with a fixed summation order.
     */
    void loraDelta(float[] w, int wOff, int rows, int cols, float[] left, int leftOff, float[] right, int r,
                   float scale);

    /**
     * Change statistics of {@code n} merged values, added into {@code acc}: {@code acc[0] = max(acc[0], |merged[i] -
     * base[i]|)}, {@code acc[1] += (merged[i] - base[i])^2}, {@code acc[2] += base[i]^2}. A non-finite value makes
     * the sums and the maximum NaN or infinite (such a merge fails the export unless non-finite values are allowed,
     * and then its statistics mean nothing). These are statistics, not output: implementations may sum in another
     * order and in float32 before double, so they agree with the reference to a relative 1e-4, not bit for bit.
     */
    void deltaStats(float[] base, float[] merged, int n, double[] acc);

    /**
     * How many of {@code bits[off .. off + n)} have all of {@code mask}'s bits set: with an exponent mask (0x7C00
     * for F16, 0x7F80 for BF16), the NaNs and infinities among rounded 16-bit floats.
     */
    int countExponentAllOnes(short[] bits, int off, int n, short mask);
}

package dev.dequant4j.internal.cpu;

/** The reference implementation: plain Java loops, one IEEE binary32 operation at a time. */
public final class ScalarKernels implements CpuKernels {
    public static final ScalarKernels INSTANCE = new ScalarKernels();

    /** f32(1/127), the constant of bitsandbytes' {@code int8_vectorwise_dequant} (0x3C010204). */
    public static final float INV_127 = 0.007874015718698502f;

    private ScalarKernels() {}

    @Override
    public String name() {
        return "scalar";
    }

    @Override
    public void dequant4bit(float[] code, byte[] packed, long start, int count, float[] absmax, int blockShift,
                            float[] out, int outOff) {
        long firstBlock = start >>> blockShift;
        long firstByte = start >>> 1;
        for (int i = 0; i < count; i++) {
            long k = start + i;
            int b = packed[(int) ((k >>> 1) - firstByte)] & 0xFF;
            int nib = (k & 1) == 0 ? b >>> 4 : b & 0x0F;
            out[outOff + i] = code[nib] * absmax[(int) ((k >>> blockShift) - firstBlock)];
        }
    }

    @Override
    public void absmaxDoubleQuant(byte[] codes, int codesOff, int count, float[] nestedMap, float[] nestedAbsmax,
                                  long firstBlock, float offset, float[] out) {
        long nestedBase = firstBlock >>> 8;
        for (int i = 0; i < count; i++) {
            int nested = (int) (((firstBlock + i) >>> 8) - nestedBase);
            float t = nestedMap[codes[codesOff + i] & 0xFF] * nestedAbsmax[nested];
            out[i] = t + offset;
        }
    }

    @Override
    public void dequantInt8(byte[] q, int qOff, int count, float scb, float[] out, int outOff) {
        for (int i = 0; i < count; i++) {
            float t = q[qOff + i] * scb;
            out[outOff + i] = t * INV_127;
        }
    }

    @Override
    public void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
        for (int i = 0; i < n; i++) {
            dst[dstOff + i] = Float.float16ToFloat(src[srcOff + i]);
        }
    }

    @Override
    public void bf16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
        for (int i = 0; i < n; i++) {
            dst[dstOff + i] = Float.intBitsToFloat(src[srcOff + i] << 16);
        }
    }

    @Override
    public void f32ToF16(float[] src, int srcOff, short[] dst, int dstOff, int n) {
        for (int i = 0; i < n; i++) {
            dst[dstOff + i] = Float.floatToFloat16(src[srcOff + i]);
        }
    }

    @Override
    public void f32ToBf16(float[] src, int srcOff, short[] dst, int dstOff, int n) {
        for (int i = 0; i < n; i++) {
            dst[dstOff + i] = toBf16(src[srcOff + i]);
        }
    }

    /** float to bfloat16 bits, round to nearest even; NaN becomes the canonical 0x7FC0 (as c10::BFloat16). */
    public static short toBf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) {
            return (short) 0x7FC0;
        }
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    @Override
    public void loraDelta(float[] w, int wOff, int rows, int cols, float[] left, int leftOff, float[] right, int r,
                          float scale) {
        float[] acc = new float[cols];
        for (int i = 0; i < rows; i++) {
            float l0 = left[leftOff + i * r];
            for (int c = 0; c < cols; c++) {
                acc[c] = l0 * right[c];
            }
            for (int k = 1; k < r; k++) {
                float lk = left[leftOff + i * r + k];
                int rb = k * cols;
                for (int c = 0; c < cols; c++) {
                    acc[c] = acc[c] + lk * right[rb + c];
                }
            }
            int wb = wOff + i * cols;
            for (int c = 0; c < cols; c++) {
                w[wb + c] = w[wb + c] + acc[c] * scale;
            }
        }
    }

    @Override
    public void deltaStats(float[] base, float[] merged, int n, double[] acc) {
        double max = acc[0];
        double d2 = 0;
        double b2 = 0;
        for (int i = 0; i < n; i++) {
            double b = base[i];
            double d = merged[i] - b;
            b2 += b * b;
            d2 += d * d;
            max = Math.max(max, Math.abs(d));
        }
        acc[0] = max;
        acc[1] += d2;
        acc[2] += b2;
    }

    @Override
    public int countExponentAllOnes(short[] bits, int off, int n, short mask) {
        int count = 0;
        for (int i = 0; i < n; i++) {
            count += (bits[off + i] & mask) == mask ? 1 : 0;
        }
        return count;
    }
}

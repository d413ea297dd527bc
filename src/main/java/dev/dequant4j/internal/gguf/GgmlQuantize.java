package dev.dequant4j.internal.gguf;

import java.nio.ByteBuffer;

/**
 * fp32 rows to ggml's block formats, bit-exact with the reference quantizers of ggml/src/ggml-quants.c (llama.cpp
 * 81ff7ab): {@code quantize_row_q8_0_ref} (which gguf-py's numpy Q8_0 reproduces, so this is also what
 * {@code convert_hf_to_gguf.py --outtype q8_0} writes), {@code q4_0/q4_1/q5_0/q5_1} and the K-quants
 * {@code q4_K/q5_K/q6_K}: what {@code llama-quantize} writes without an importance matrix.
 *
 * <p>ggml-base, which holds these functions, is compiled without {@code -march} (x86-64 baseline, SSE2) even in a
 * {@code GGML_NATIVE} build, so no multiply-add is fused there: every operation below is one float operation in C's
 * evaluation order, which Java's float arithmetic reproduces exactly. Each row is quantized independently; scratch
 * space is per thread, so a row allocates nothing. Where the Vector API kernels are in use, the K-quants search the
 * sub-blocks of a super-block in parallel lanes ({@link SubBlockSearch}), with the same operations per lane.
 */
public final class GgmlQuantize {
    private static final int QK_K = 256;
    private static final float GROUP_MAX_EPS = 1e-15f;

    /** The Vector API search over a super-block's 8 sub-blocks at once, or null for the scalar one. */
    private static final SubBlockSearch SEARCH = SubBlockSearch.lookup();

    private GgmlQuantize() {}

    /** Per-thread scratch: no allocation per row or block. */
    private static final class Scratch {
        final float[] weights = new float[QK_K];
        final byte[] l = new byte[QK_K];
        final byte[] laux = new byte[32];
        final float[] scales = new float[QK_K / 16];
        final float[] mins = new float[QK_K / 32];
        final float[] out = new float[1];
        float maxScale;
        float maxMin;
        SubBlockSearch search;
        byte[] row = new byte[0];

        byte[] row(int size) {
            if (row.length < size) {
                row = new byte[size];
            }
            return row;
        }
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    /** Whether {@link #quantize} writes {@code type}. */
    public static boolean supports(GgmlType type) {
        return switch (type) {
            case F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K -> true;
            default -> false;
        };
    }

    /** Bytes of one row of {@code cols} elements, as ggml's {@code ggml_row_size}. */
    public static long rowSize(GgmlType type, long cols) {
        requireWholeBlocks(type, cols);
        return cols / type.blockSize * type.typeSize;
    }

    /**
     * Quantizes {@code rows} rows of {@code cols} fp32 values, row-major from {@code src[srcOff]}, into {@code dst}
     * at its position (little-endian whatever its byte order), advancing the position by
     * {@code rows * rowSize(type, cols)}.
     *
     * @throws IllegalArgumentException when {@code type} is not supported, {@code cols} is not a whole number of
     *     blocks, {@code src} holds fewer values or {@code dst} has less room than the rows need
     */
    public static void quantize(GgmlType type, float[] src, int srcOff, int rows, int cols, ByteBuffer dst) {
        quantize(type, src, srcOff, rows, cols, dst, SEARCH);
    }

    /** {@link #quantize} with the given sub-block search; null is the scalar reference. */
    static void quantize(GgmlType type, float[] src, int srcOff, int rows, int cols, ByteBuffer dst,
            SubBlockSearch search) {
        if (!supports(type)) {
            throw new IllegalArgumentException("no quantizer for ggml type " + type);
        }
        if (rows < 0 || cols <= 0) {
            throw new IllegalArgumentException("bad shape: " + rows + " rows of " + cols);
        }
        long rowSize = rowSize(type, cols);
        if (srcOff < 0 || (long) rows * cols > src.length - (long) srcOff) {
            throw new IllegalArgumentException(rows + " rows of " + cols + " from offset " + srcOff
                    + " exceed the source's " + src.length + " values");
        }
        if (rows * rowSize > dst.remaining()) {
            throw new IllegalArgumentException(rows + " rows of " + type + " need " + rows * rowSize
                    + " bytes, the buffer has " + dst.remaining());
        }
        Scratch s = SCRATCH.get();
        s.search = search;
        byte[] out = s.row((int) rowSize);
        for (int r = 0; r < rows; r++) {
            int x = srcOff + r * cols;
            int nb = cols / type.blockSize;
            for (int i = 0; i < nb; i++) {
                int xb = x + i * type.blockSize;
                int yb = i * type.typeSize;
                switch (type) {
                    case F32 -> putFloat(out, yb, src[xb]);
                    case F16 -> putShort(out, yb, fp32ToFp16(src[xb]));
                    case Q8_0 -> q8_0(src, xb, out, yb);
                    case Q4_0 -> q4_0(src, xb, out, yb);
                    case Q4_1 -> q4_1(src, xb, out, yb);
                    case Q5_0 -> q5_0(src, xb, out, yb);
                    case Q5_1 -> q5_1(src, xb, out, yb);
                    case Q4_K -> q4K(src, xb, out, yb, s);
                    case Q5_K -> q5K(src, xb, out, yb, s);
                    case Q6_K -> q6K(src, xb, out, yb, s);
                    default -> throw new IllegalStateException(type.name());
                }
            }
            dst.put(out, 0, (int) rowSize);
        }
    }

    private static void requireWholeBlocks(GgmlType type, long cols) {
        if (cols < 0 || cols % type.blockSize != 0) {
            throw new IllegalArgumentException("a row of " + cols + " elements is not a whole number of "
                    + type + " blocks of " + type.blockSize);
        }
    }

    // ---- 32-element block types ----

    private static void q8_0(float[] x, int xb, byte[] y, int yb) {
        float amax = 0f;
        for (int j = 0; j < 32; j++) {
            float a = Math.abs(x[xb + j]);
            amax = amax > a ? amax : a; // ggml's MAX macro, including its NaN behaviour
        }
        float d = amax / 127;
        float id = d != 0f ? 1.0f / d : 0.0f;
        putShort(y, yb, fp32ToFp16(d));
        for (int j = 0; j < 32; j++) {
            y[yb + 2 + j] = (byte) roundfToInt(x[xb + j] * id);
        }
    }

    private static void q4_0(float[] x, int xb, byte[] y, int yb) {
        float amax = 0f;
        float max = 0f;
        for (int j = 0; j < 32; j++) {
            float v = x[xb + j];
            if (amax < Math.abs(v)) {
                amax = Math.abs(v);
                max = v;
            }
        }
        float d = max / -8;
        float id = d != 0f ? 1.0f / d : 0.0f;
        putShort(y, yb, fp32ToFp16(d));
        for (int j = 0; j < 16; j++) {
            int xi0 = Math.min(15, (byte) cvtt(x[xb + j] * id + 8.5f));
            int xi1 = Math.min(15, (byte) cvtt(x[xb + 16 + j] * id + 8.5f));
            y[yb + 2 + j] = (byte) (xi0 | xi1 << 4);
        }
    }

    private static void q4_1(float[] x, int xb, byte[] y, int yb) {
        float min = Float.MAX_VALUE;
        float max = -Float.MAX_VALUE;
        for (int j = 0; j < 32; j++) {
            float v = x[xb + j];
            if (v < min) {
                min = v;
            }
            if (v > max) {
                max = v;
            }
        }
        float d = (max - min) / 15;
        float id = d != 0f ? 1.0f / d : 0.0f;
        putShort(y, yb, fp32ToFp16(d));
        putShort(y, yb + 2, fp32ToFp16(min));
        for (int j = 0; j < 16; j++) {
            int xi0 = Math.min(15, (byte) cvtt((x[xb + j] - min) * id + 0.5f));
            int xi1 = Math.min(15, (byte) cvtt((x[xb + 16 + j] - min) * id + 0.5f));
            y[yb + 4 + j] = (byte) (xi0 | xi1 << 4);
        }
    }

    private static void q5_0(float[] x, int xb, byte[] y, int yb) {
        float amax = 0f;
        float max = 0f;
        for (int j = 0; j < 32; j++) {
            float v = x[xb + j];
            if (amax < Math.abs(v)) {
                amax = Math.abs(v);
                max = v;
            }
        }
        float d = max / -16;
        float id = d != 0f ? 1.0f / d : 0.0f;
        putShort(y, yb, fp32ToFp16(d));
        int qh = 0;
        for (int j = 0; j < 16; j++) {
            int xi0 = Math.min(31, (byte) cvtt(x[xb + j] * id + 16.5f)) & 0xFF;
            int xi1 = Math.min(31, (byte) cvtt(x[xb + 16 + j] * id + 16.5f)) & 0xFF;
            y[yb + 6 + j] = (byte) ((xi0 & 0x0F) | (xi1 & 0x0F) << 4);
            qh |= ((xi0 & 0x10) >>> 4) << j;
            qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
        }
        putInt(y, yb + 2, qh);
    }

    private static void q5_1(float[] x, int xb, byte[] y, int yb) {
        float min = Float.MAX_VALUE;
        float max = -Float.MAX_VALUE;
        for (int j = 0; j < 32; j++) {
            float v = x[xb + j];
            if (v < min) {
                min = v;
            }
            if (v > max) {
                max = v;
            }
        }
        float d = (max - min) / 31;
        float id = d != 0f ? 1.0f / d : 0.0f;
        putShort(y, yb, fp32ToFp16(d));
        putShort(y, yb + 2, fp32ToFp16(min));
        int qh = 0;
        for (int j = 0; j < 16; j++) {
            int xi0 = cvtt((x[xb + j] - min) * id + 0.5f) & 0xFF;
            int xi1 = cvtt((x[xb + 16 + j] - min) * id + 0.5f) & 0xFF;
            y[yb + 8 + j] = (byte) ((xi0 & 0x0F) | (xi1 & 0x0F) << 4);
            qh |= ((xi0 & 0x10) >>> 4) << j;
            qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
        }
        putInt(y, yb + 4, qh);
    }

    // ---- K-quants: super-blocks of 256 ----

    /** q4_K: d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit quants. */
    private static void q4K(float[] x, int xb, byte[] y, int yb, Scratch s) {
        scalesAndMins(x, xb, y, yb + 4, s, 15, -1f, 20);
        putShort(y, yb, fp32ToFp16(s.maxScale / 63.f));
        putShort(y, yb + 2, fp32ToFp16(s.maxMin / 63.f));
        requantize(x, xb, y, yb, s, 15);
        byte[] l = s.l;
        int q = yb + 16;
        for (int j = 0; j < QK_K; j += 64) {
            for (int i = 0; i < 32; i++) {
                y[q + i] = (byte) (l[j + i] | l[j + i + 32] << 4);
            }
            q += 32;
        }
    }

    /** q5_K: d, dmin (f16), 12 bytes of 6-bit scales and mins, 32 bytes of high bits, 128 bytes of low nibbles. */
    private static void q5K(float[] x, int xb, byte[] y, int yb, Scratch s) {
        scalesAndMins(x, xb, y, yb + 4, s, 31, -0.5f, 15);
        putShort(y, yb, fp32ToFp16(s.maxScale / 63.f));
        putShort(y, yb + 2, fp32ToFp16(s.maxMin / 63.f));
        requantize(x, xb, y, yb, s, 31);
        byte[] l = s.l;
        int qh = yb + 16;
        int ql = yb + 48;
        java.util.Arrays.fill(y, qh, qh + 32, (byte) 0);
        int m1 = 1;
        int m2 = 2;
        for (int n = 0; n < QK_K; n += 64) {
            for (int j = 0; j < 32; j++) {
                int l1 = l[n + j];
                if (l1 > 15) {
                    l1 -= 16;
                    y[qh + j] |= (byte) m1;
                }
                int l2 = l[n + j + 32];
                if (l2 > 15) {
                    l2 -= 16;
                    y[qh + j] |= (byte) m2;
                }
                y[ql + j] = (byte) (l1 | l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
            ql += 32;
        }
    }

    /**
     * The first half of q4_K/q5_K: per 32-element sub-block, {@code make_qkx2_quants} with the weights
     * {@code sqrt(mean(x^2)) + |x|}, then the scales and mins as 6-bit numbers of the largest; writes the 12 packed
     * bytes at {@code ys} and the largest scale and min to {@code s}.
     */
    private static void scalesAndMins(float[] x, int xb, byte[] y, int ys, Scratch s, int nmax, float rmin, int nstep) {
        float[] scales = s.scales;
        float[] mins = s.mins;
        float[] weights = s.weights;
        for (int j = 0; j < QK_K / 32; j++) {
            int xj = xb + 32 * j;
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) {
                sumX2 += x[xj + l] * x[xj + l];
            }
            float avX = (float) Math.sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) {
                weights[32 * j + l] = avX + Math.abs(x[xj + l]);
            }
        }
        if (s.search != null) {
            s.search.makeQkx2Quants8(x, xb, weights, nmax, rmin, 0.1f, nstep, s.l, scales, mins);
        } else {
            for (int j = 0; j < QK_K / 32; j++) {
                scales[j] = makeQkx2Quants(32, nmax, x, xb + 32 * j, weights, 32 * j, s.l, 32 * j, s.out, s.laux,
                        rmin, 0.1f, nstep);
                mins[j] = s.out[0];
            }
        }
        float maxScale = 0;
        float maxMin = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            if (scales[j] > maxScale) {
                maxScale = scales[j];
            }
            if (mins[j] > maxMin) {
                maxMin = mins[j];
            }
        }
        float invScale = maxScale > 0 ? 63.f / maxScale : 0.f;
        float invMin = maxMin > 0 ? 63.f / maxMin : 0.f;
        for (int j = 0; j < QK_K / 32; j++) {
            int ls = Math.min(63, nearestInt(invScale * scales[j]) & 0xFF);
            int lm = Math.min(63, nearestInt(invMin * mins[j]) & 0xFF);
            if (j < 4) {
                y[ys + j] = (byte) ls;
                y[ys + j + 4] = (byte) lm;
            } else {
                y[ys + j + 4] = (byte) ((ls & 0xF) | (lm & 0xF) << 4);
                y[ys + j - 4] |= (byte) ((ls >> 4) << 6);
                y[ys + j] |= (byte) ((lm >> 4) << 6);
            }
        }
        s.maxScale = maxScale;
        s.maxMin = maxMin;
    }

    /** The second half of q4_K/q5_K: quants again from the rounded (f16, 6-bit) scales and mins. */
    private static void requantize(float[] x, int xb, byte[] y, int yb, Scratch s, int nmax) {
        float d0 = fp16ToFp32(getShort(y, yb));
        float dmin0 = fp16ToFp32(getShort(y, yb + 2));
        int ys = yb + 4;
        for (int j = 0; j < QK_K / 32; j++) {
            int sc;
            int m;
            if (j < 4) {
                sc = y[ys + j] & 63;
                m = y[ys + j + 4] & 63;
            } else {
                sc = (y[ys + j + 4] & 0xF) | ((y[ys + j - 4] & 0xFF) >> 6) << 4;
                m = ((y[ys + j + 4] & 0xFF) >> 4) | ((y[ys + j] & 0xFF) >> 6) << 4;
            }
            float d = d0 * sc;
            if (d == 0f) {
                continue;
            }
            float dm = dmin0 * m;
            for (int ii = 0; ii < 32; ii++) {
                int l = nearestInt((x[xb + 32 * j + ii] + dm) / d);
                s.l[32 * j + ii] = (byte) Math.max(0, Math.min(nmax, l));
            }
        }
    }

    /** q6_K: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed 8-bit scales, d (f16). */
    private static void q6K(float[] x, int xb, byte[] y, int yb, Scratch s) {
        byte[] l = s.l;
        float[] scales = s.scales;
        float maxScale = 0;
        float maxAbsScale = 0;
        if (s.search != null) {
            s.search.makeQxQuants16(x, xb, l, scales);
        } else {
            for (int ib = 0; ib < QK_K / 16; ib++) {
                scales[ib] = makeQxQuantsRmse1(16, 32, x, xb + 16 * ib, l, 16 * ib);
            }
        }
        for (int ib = 0; ib < QK_K / 16; ib++) {
            float scale = scales[ib];
            float absScale = Math.abs(scale);
            if (absScale > maxAbsScale) {
                maxAbsScale = absScale;
                maxScale = scale;
            }
        }
        if (maxAbsScale < GROUP_MAX_EPS) {
            java.util.Arrays.fill(y, yb, yb + 210, (byte) 0);
            return;
        }
        float iscale = -128.f / maxScale;
        putShort(y, yb + 208, fp32ToFp16(1 / iscale));
        for (int ib = 0; ib < QK_K / 16; ib++) {
            y[yb + 192 + ib] = (byte) Math.min(127, nearestInt(iscale * scales[ib]));
        }
        float d0 = fp16ToFp32(getShort(y, yb + 208));
        for (int j = 0; j < QK_K / 16; j++) {
            float d = d0 * y[yb + 192 + j];
            if (d == 0f) {
                continue;
            }
            for (int ii = 0; ii < 16; ii++) {
                int q = nearestInt(x[xb + 16 * j + ii] / d);
                l[16 * j + ii] = (byte) (Math.max(-32, Math.min(31, q)) + 32);
            }
        }
        int ql = yb;
        int qh = yb + 128;
        for (int j = 0; j < QK_K; j += 128) {
            for (int i = 0; i < 32; i++) {
                int q1 = l[j + i] & 0xF;
                int q2 = l[j + i + 32] & 0xF;
                int q3 = l[j + i + 64] & 0xF;
                int q4 = l[j + i + 96] & 0xF;
                y[ql + i] = (byte) (q1 | q3 << 4);
                y[ql + i + 32] = (byte) (q2 | q4 << 4);
                y[qh + i] = (byte) ((l[j + i] >> 4) | (l[j + i + 32] >> 4) << 2 | (l[j + i + 64] >> 4) << 4
                        | (l[j + i + 96] >> 4) << 6);
            }
            ql += 64;
            qh += 32;
        }
    }

    // ---- ggml-quants.c helpers ----

    /** ggml's {@code nearest_int}: round half to even through the float adder, for |f| <= 2^22. */
    static int nearestInt(float f) {
        float val = f + 12582912.f;
        return (Float.floatToRawIntBits(val) & 0x007fffff) - 0x00400000;
    }

    /**
     * C's float to integer conversion as x86-64 does it ({@code cvttss2si}): truncation, and the "integer
     * indefinite" 0x80000000 for NaN and values out of int range. ggml reaches those (a row of fp32 subnormals makes
     * {@code 1/d} infinite) and stores the low byte, 0; Java's saturating cast would store -1.
     */
    static int cvtt(float f) {
        return f >= -0x1p31f && f < 0x1p31f ? (int) f : Integer.MIN_VALUE;
    }

    /**
     * {@code (int) roundf(v)} as ggml's Q8_0 stores it: half away from zero ({@code roundf}), then {@link #cvtt}'s
     * conversion. The fractional part of a float is exact, so {@code a - (int) a} decides the rounding exactly.
     */
    static int roundfToInt(float v) {
        float a = Math.abs(v);
        if (!(a < 0x1p31f)) {
            return Integer.MIN_VALUE;
        }
        int i = (int) a;
        if (a - i >= 0.5f) {
            i++;
        }
        return v < 0 ? -i : i;
    }

    /**
     * {@code make_qkx2_quants} with {@code use_mad = false}: an asymmetric scale and min for {@code n} values,
     * searched over {@code nstep + 1} trial scales. Writes the quants to {@code l[lOff..]}, the negated min to
     * {@code theMin[0]}; returns the scale.
     */
    private static float makeQkx2Quants(int n, int nmax, float[] x, int xo, float[] weights, int wo, byte[] l,
            int lOff, float[] theMin, byte[] laux, float rmin, float rdelta, int nstep) {
        float min = x[xo];
        float max = x[xo];
        float sumW = weights[wo];
        float sumX = sumW * x[xo];
        for (int i = 1; i < n; i++) {
            float xi = x[xo + i];
            if (xi < min) {
                min = xi;
            }
            if (xi > max) {
                max = xi;
            }
            float w = weights[wo + i];
            sumW += w;
            sumX += w * xi;
        }
        if (min > 0) {
            min = 0;
        }
        if (max == min) {
            java.util.Arrays.fill(l, lOff, lOff + n, (byte) 0);
            theMin[0] = -min;
            return 0.f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++) {
            int q = Math.max(0, Math.min(nmax, nearestInt(iscale * (x[xo + i] - min))));
            l[lOff + i] = (byte) q;
            float diff = scale * q + min - x[xo + i];
            diff = diff * diff;
            bestError += weights[wo + i] * diff;
        }
        for (int is = 0; is <= nstep; is++) {
            iscale = (rmin + rdelta * is + nmax) / (max - min);
            float sumL = 0;
            float sumL2 = 0;
            float sumXl = 0;
            for (int i = 0; i < n; i++) {
                int q = Math.max(0, Math.min(nmax, nearestInt(iscale * (x[xo + i] - min))));
                laux[i] = (byte) q;
                float w = weights[wo + i];
                sumL += w * q;
                sumL2 += w * q * q;
                sumXl += w * q * x[xo + i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0) {
                float thisScale = (sumW * sumXl - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXl) / det;
                if (thisMin > 0) {
                    thisMin = 0;
                    thisScale = sumXl / sumL2;
                }
                float curError = 0;
                for (int i = 0; i < n; i++) {
                    float diff = thisScale * laux[i] + thisMin - x[xo + i];
                    diff = diff * diff;
                    curError += weights[wo + i] * diff;
                }
                if (curError < bestError) {
                    System.arraycopy(laux, 0, l, lOff, n);
                    bestError = curError;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin[0] = -min;
        return scale;
    }

    /**
     * {@code make_qx_quants} with {@code rmse_type = 1} and no importance weights (as q6_K calls it): a symmetric
     * scale for {@code n} values weighted by x², searched over 18 trial scales; quants offset by {@code nmax}.
     */
    private static float makeQxQuantsRmse1(int n, int nmax, float[] x, int xo, byte[] l, int lOff) {
        float max = 0;
        float amax = 0;
        for (int i = 0; i < n; i++) {
            float ax = Math.abs(x[xo + i]);
            if (ax > amax) {
                amax = ax;
                max = x[xo + i];
            }
        }
        if (amax < GROUP_MAX_EPS) {
            java.util.Arrays.fill(l, lOff, lOff + n, (byte) 0);
            return 0.f;
        }
        float iscale = -nmax / max;
        float sumlx = 0;
        float suml2 = 0;
        for (int i = 0; i < n; i++) {
            float xi = x[xo + i];
            int q = Math.max(-nmax, Math.min(nmax - 1, nearestInt(iscale * xi)));
            l[lOff + i] = (byte) (q + nmax);
            float w = xi * xi;
            sumlx += w * xi * q;
            suml2 += w * q * q;
        }
        float scale = suml2 != 0f ? sumlx / suml2 : 0.0f;
        float best = scale * sumlx;
        for (int is = -9; is <= 9; is++) {
            if (is == 0) {
                continue;
            }
            iscale = -(nmax + 0.1f * is) / max;
            sumlx = 0;
            suml2 = 0;
            for (int i = 0; i < n; i++) {
                float xi = x[xo + i];
                int q = Math.max(-nmax, Math.min(nmax - 1, nearestInt(iscale * xi)));
                float w = xi * xi;
                sumlx += w * xi * q;
                suml2 += w * q * q;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2) {
                for (int i = 0; i < n; i++) {
                    int q = nearestInt(iscale * x[xo + i]);
                    l[lOff + i] = (byte) (nmax + Math.max(-nmax, Math.min(nmax - 1, q)));
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /** ggml's {@code ggml_compute_fp32_to_fp16} (round to nearest even; NaN becomes 0x7E00 with the sign). */
    static short fp32ToFp16(float f) {
        float base = (Math.abs(f) * 0x1.0p+112f) * 0x1.0p-110f;
        int w = Float.floatToRawIntBits(f);
        int shl1W = w + w;
        int sign = w & 0x80000000;
        int bias = shl1W & 0xFF000000;
        if (Integer.compareUnsigned(bias, 0x71000000) < 0) {
            bias = 0x71000000;
        }
        base = Float.intBitsToFloat((bias >>> 1) + 0x07800000) + base;
        int bits = Float.floatToRawIntBits(base);
        int expBits = (bits >>> 13) & 0x00007C00;
        int mantissaBits = bits & 0x00000FFF;
        int nonsign = expBits + mantissaBits;
        return (short) ((sign >>> 16) | (Integer.compareUnsigned(shl1W, 0xFF000000) > 0 ? 0x7E00 : nonsign));
    }

    static float fp16ToFp32(short h) {
        return Float.float16ToFloat(h);
    }

    private static void putShort(byte[] y, int at, short v) {
        y[at] = (byte) v;
        y[at + 1] = (byte) (v >> 8);
    }

    private static short getShort(byte[] y, int at) {
        return (short) ((y[at] & 0xFF) | y[at + 1] << 8);
    }

    private static void putInt(byte[] y, int at, int v) {
        y[at] = (byte) v;
        y[at + 1] = (byte) (v >> 8);
        y[at + 2] = (byte) (v >> 16);
        y[at + 3] = (byte) (v >> 24);
    }

    private static void putFloat(byte[] y, int at, float v) {
        putInt(y, at, Float.floatToRawIntBits(v));
    }
}

package dev.dequant4j.internal.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.internal.bnb.Fp4;
import dev.dequant4j.internal.bnb.Nf4;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The Vector API kernels give the same bits as the scalar reference, on random inputs and on the edges of their loops
 * (starts, counts and offsets that are not multiples of the vector length, every 4-bit blocksize, every rank up to
 * 130) and of the float formats (every half and bfloat16 pattern, NaN payloads, subnormals, rounding ties,
 * overflow). Outputs are compared including the slots around the written range, and inputs are sized exactly, so a
 * vector access past the range fails too.
 */
class KernelsDifferentialTest extends BaseKernelsTestCase {
    /** Fills the slots a kernel must not write. */
    private static final float SENTINEL = Float.intBitsToFloat(0x7FC0BEEF);
    private static final short SHORT_SENTINEL = (short) 0xBEEF;

    // ---- 4-bit ----

    private void checkDequant4bit(float[] code, long start, int count, int blockShift) {
        long end = start + count;
        int nbytes = count == 0 ? 0 : (int) (((end - 1) >>> 1) - (start >>> 1) + 1);
        int nblocks = count == 0 ? 0 : (int) (((end - 1) >>> blockShift) - (start >>> blockShift) + 1);
        byte[] packed = new byte[nbytes];
        random.nextBytes(packed);
        float[] absmax = new float[nblocks];
        for (int i = 0; i < nblocks; i++) {
            absmax[i] = random.nextInt(8) == 0 ? anyFloat() : Math.abs(finiteFloat());
        }
        int outOff = random.nextInt(5);
        float[] want = new float[outOff + count + 3];
        Arrays.fill(want, SENTINEL);
        float[] got = want.clone();
        SCALAR.dequant4bit(code, packed, start, count, absmax, blockShift, want, outOff);
        VECTOR.dequant4bit(code, packed, start, count, absmax, blockShift, got, outOff);
        assertSameBits(want, got, "dequant4bit(start=" + start + ", count=" + count + ", blocksize="
                + (1 << blockShift) + ", outOff=" + outOff + ")");
    }

    private float[] randomCode() {
        float[] code = new float[16];
        for (int i = 0; i < 16; i++) {
            code[i] = finiteFloat();
        }
        code[random.nextInt(16)] = -0f;
        return code;
    }

    @Test
    void dequant4bitEveryBlocksizeStartAndCount() {
        for (int shift = 5; shift <= 12; shift++) {
            int bs = 1 << shift;
            long[] starts = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, bs - 1, bs, bs + 1, 3L * bs - 5,
                (1L << 33) + 1, (1L << 33) + bs - 2, random.nextInt(1 << 20)};
            int[] counts = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, bs, 2 * bs + 7,
                random.nextInt(5000)};
            for (long start : starts) {
                float[] code = random.nextBoolean() ? Nf4.code() : randomCode();
                for (int count : counts) {
                    checkDequant4bit(code, start, count, shift);
                }
            }
        }
    }

    @Test
    void dequant4bitLongRandomRuns() {
        for (float[] code : List.of(Nf4.code(), Fp4.code(), randomCode())) {
            for (int rep = 0; rep < 4; rep++) {
                checkDequant4bit(code, random.nextLong(1L << 40), 50_000 + random.nextInt(50_000),
                        5 + random.nextInt(8));
            }
        }
    }

    @Test
    void absmaxDoubleQuantAroundNestedBlocks() {
        long[] firsts = {0, 1, 255, 256, 257, 511, (1L << 35) + 7, random.nextLong(1L << 40)};
        int[] counts = {0, 1, 7, 8, 9, 255, 256, 257, 1000, random.nextInt(3000)};
        for (long first : firsts) {
            for (int count : counts) {
                int codesOff = random.nextInt(4);
                byte[] codes = new byte[codesOff + count];
                random.nextBytes(codes);
                float[] nestedMap = new float[256];
                for (int i = 0; i < 256; i++) {
                    nestedMap[i] = anyFloat();
                }
                int nested = count == 0 ? 0 : (int) (((first + count - 1) >>> 8) - (first >>> 8) + 1);
                float[] nestedAbsmax = new float[nested];
                for (int i = 0; i < nested; i++) {
                    nestedAbsmax[i] = Math.abs(finiteFloat());
                }
                float offset = finiteFloat();
                float[] want = new float[count + 3];
                Arrays.fill(want, SENTINEL);
                float[] got = want.clone();
                SCALAR.absmaxDoubleQuant(codes, codesOff, count, nestedMap, nestedAbsmax, first, offset, want);
                VECTOR.absmaxDoubleQuant(codes, codesOff, count, nestedMap, nestedAbsmax, first, offset, got);
                assertSameBits(want, got, "absmaxDoubleQuant(firstBlock=" + first + ", count=" + count + ")");
            }
        }
    }

    // ---- int8 ----

    @Test
    void dequantInt8EveryByteAndScale() {
        byte[] all = new byte[256 * 4 + 37];
        for (int i = 0; i < all.length; i++) {
            all[i] = (byte) i;
        }
        List<Float> scales = new ArrayList<>();
        for (float s : SPECIALS) {
            scales.add(s);
        }
        for (int i = 0; i < 40; i++) {
            scales.add(anyFloat());
        }
        for (float scb : scales) {
            for (int count : new int[] {0, 1, 7, 8, 9, 31, 33, 255, all.length - 3, random.nextInt(all.length - 3)}) {
                int qOff = random.nextInt(3);
                int outOff = random.nextInt(3);
                float[] want = new float[outOff + count + 2];
                Arrays.fill(want, SENTINEL);
                float[] got = want.clone();
                SCALAR.dequantInt8(all, qOff, count, scb, want, outOff);
                VECTOR.dequantInt8(all, qOff, count, scb, got, outOff);
                assertSameBits(want, got, "dequantInt8(scb=" + bits(scb) + ", count=" + count + ")");
            }
        }
    }

    // ---- half precision ----

    /** Every 16-bit pattern, then random slices of them at every offset. */
    private static short[] allShorts() {
        short[] s = new short[65536];
        for (int i = 0; i < s.length; i++) {
            s[i] = (short) i;
        }
        return s;
    }

    private interface ShortsToFloats {
        void run(CpuKernels k, short[] src, int srcOff, float[] dst, int dstOff, int n);
    }

    private interface FloatsToShorts {
        void run(CpuKernels k, float[] src, int srcOff, short[] dst, int dstOff, int n);
    }

    private void checkToF32(ShortsToFloats op, short[] src, String what) {
        for (int srcOff = 0; srcOff < 3; srcOff++) {
            for (int dstOff = 0; dstOff < 3; dstOff++) {
                int n = src.length - srcOff;
                float[] want = new float[dstOff + n + 2];
                Arrays.fill(want, SENTINEL);
                float[] got = want.clone();
                op.run(SCALAR, src, srcOff, want, dstOff, n);
                op.run(VECTOR, src, srcOff, got, dstOff, n);
                assertSameBits(want, got, what + "(srcOff=" + srcOff + ", dstOff=" + dstOff + ", n=" + n + ")");
            }
        }
        for (int rep = 0; rep < 50; rep++) {
            int n = random.nextInt(70);
            int srcOff = random.nextInt(src.length - n);
            float[] want = new float[n + 1];
            Arrays.fill(want, SENTINEL);
            float[] got = want.clone();
            op.run(SCALAR, src, srcOff, want, 1, n);
            op.run(VECTOR, src, srcOff, got, 1, n);
            assertSameBits(want, got, what + "(srcOff=" + srcOff + ", n=" + n + ")");
        }
    }

    private void checkFromF32(FloatsToShorts op, float[] src, String what) {
        for (int srcOff = 0; srcOff < 3; srcOff++) {
            for (int dstOff = 0; dstOff < 3; dstOff++) {
                int n = src.length - srcOff;
                short[] want = new short[dstOff + n + 2];
                Arrays.fill(want, SHORT_SENTINEL);
                short[] got = want.clone();
                op.run(SCALAR, src, srcOff, want, dstOff, n);
                op.run(VECTOR, src, srcOff, got, dstOff, n);
                for (int i = 0; i < n; i++) {
                    if (want[dstOff + i] != got[dstOff + i]) {
                        throw new AssertionError(what + " of " + bits(src[srcOff + i]) + ": scalar 0x"
                                + Integer.toHexString(want[dstOff + i] & 0xFFFF) + ", " + VECTOR.name() + " 0x"
                                + Integer.toHexString(got[dstOff + i] & 0xFFFF) + " (-Dtests.seed=" + seed + ")");
                    }
                }
                assertSameBits(want, got, what + "(srcOff=" + srcOff + ", dstOff=" + dstOff + ", n=" + n + ")");
            }
        }
        for (int rep = 0; rep < 50; rep++) {
            int n = random.nextInt(70);
            int srcOff = random.nextInt(src.length - n);
            short[] want = new short[n + 1];
            Arrays.fill(want, SHORT_SENTINEL);
            short[] got = want.clone();
            op.run(SCALAR, src, srcOff, want, 1, n);
            op.run(VECTOR, src, srcOff, got, 1, n);
            assertSameBits(want, got, what + "(srcOff=" + srcOff + ", n=" + n + ")");
        }
    }

    @Test
    void f16ToF32EveryPattern() {
        checkToF32(CpuKernels::f16ToF32, allShorts(), "f16ToF32");
    }

    @Test
    void bf16ToF32EveryPattern() {
        checkToF32(CpuKernels::bf16ToF32, allShorts(), "bf16ToF32");
    }

    /** Random bits, the specials, and for every pattern {@code h}: the tie between h and h+1 and its neighbours. */
    private float[] conversionInputs(boolean bf16) {
        List<Float> v = new ArrayList<>();
        for (float s : SPECIALS) {
            v.add(s);
        }
        for (int h = 0; h < 65535; h++) {
            float lo = bf16 ? Float.intBitsToFloat(h << 16) : Float.float16ToFloat((short) h);
            float hi = bf16 ? Float.intBitsToFloat((h + 1) << 16) : Float.float16ToFloat((short) (h + 1));
            if (Float.isNaN(lo) || Float.isNaN(hi) || Math.signum(lo) * Math.signum(hi) < 0) {
                v.add(lo);
                continue;
            }
            float tie = bf16 ? Float.intBitsToFloat((h << 16) + 0x8000) : (float) (((double) lo + hi) / 2);
            v.add(tie);
            v.add(Math.nextUp(tie));
            v.add(Math.nextDown(tie));
        }
        for (int i = 0; i < 200_000; i++) {
            v.add(Float.intBitsToFloat(random.nextInt()));
        }
        for (int i = 0; i < 2000; i++) {
            // NaNs with every kind of payload, signalling and quiet, both signs.
            v.add(Float.intBitsToFloat(0x7F800000 | (random.nextBoolean() ? 0x80000000 : 0)
                    | (1 + random.nextInt(0x7FFFFF))));
        }
        float[] out = new float[v.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = v.get(i);
        }
        return out;
    }

    @Test
    void f32ToF16TiesNaNsSubnormalsAndOverflow() {
        checkFromF32(CpuKernels::f32ToF16, conversionInputs(false), "f32ToF16");
    }

    @Test
    void f32ToBf16TiesNaNsSubnormalsAndOverflow() {
        checkFromF32(CpuKernels::f32ToBf16, conversionInputs(true), "f32ToBf16");
    }

    // ---- LoRA ----

    private void checkLoraDelta(int rows, int cols, int r, boolean specials) {
        int wOff = random.nextInt(3);
        int leftOff = random.nextInt(3);
        float[] w = new float[wOff + rows * cols + 2];
        Arrays.fill(w, SENTINEL);
        for (int i = 0; i < rows * cols; i++) {
            w[wOff + i] = specials ? anyFloat() : finiteFloat();
        }
        float[] left = new float[leftOff + rows * r];
        for (int i = 0; i < rows * r; i++) {
            left[leftOff + i] = specials && random.nextInt(50) == 0 ? specialNoPayload() : finiteFloat();
        }
        float[] right = new float[r * cols];
        for (int i = 0; i < right.length; i++) {
            right[i] = specials && random.nextInt(50) == 0 ? specialNoPayload() : finiteFloat();
        }
        float scale = random.nextBoolean() ? 2f / r : finiteFloat();
        float[] want = w.clone();
        float[] got = w.clone();
        SCALAR.loraDelta(want, wOff, rows, cols, left, leftOff, right, r, scale);
        VECTOR.loraDelta(got, wOff, rows, cols, left, leftOff, right, r, scale);
        String what = "loraDelta(rows=" + rows + ", cols=" + cols + ", r=" + r + ")";
        if (specials) {
            // Where two different NaNs meet, Java leaves the payload of the result open (x86 keeps the first
            // operand's, and C2 may swap the operands of a commutative op), so here NaN matches any NaN.
            for (int i = 0; i < want.length; i++) {
                if (Float.isNaN(want[i]) && Float.isNaN(got[i])) {
                    got[i] = want[i];
                }
            }
        }
        assertSameBits(want, got, what);
    }

    /** Infinities and zeros, which make NaNs (Inf * 0, Inf - Inf) and overflow inside the sums. */
    private float specialNoPayload() {
        return switch (random.nextInt(5)) {
            case 0 -> Float.POSITIVE_INFINITY;
            case 1 -> Float.NEGATIVE_INFINITY;
            case 2 -> -0f;
            case 3 -> Float.MAX_VALUE;
            default -> Float.MIN_VALUE;
        };
    }

    @Test
    void loraDeltaEveryRankUpTo130() {
        int[] colChoices = {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 65, 100, 257};
        for (int r = 1; r <= 130; r++) {
            int rows = 1 + random.nextInt(10);
            int cols = colChoices[random.nextInt(colChoices.length)];
            checkLoraDelta(rows, cols, r, false);
        }
    }

    @Test
    void loraDeltaEveryRowAndColumnTail() {
        for (int rows = 1; rows <= 9; rows++) {
            for (int cols = 1; cols <= 70; cols++) {
                checkLoraDelta(rows, cols, 1 + random.nextInt(20), false);
            }
        }
    }

    @Test
    void loraDeltaSeveralPanels() {
        for (int r : new int[] {1, 8, 16, 64, 128, 130}) {
            checkLoraDelta(37, 1037, r, false);
            checkLoraDelta(8, 4096 + 16, r, false);
        }
    }

    @Test
    void loraDeltaInfinitiesAndOverflow() {
        for (int r : new int[] {1, 2, 16, 33}) {
            checkLoraDelta(11, 75, r, true);
        }
    }

    @Test
    void loraDeltaEmptyAndInvalidShapesBehaveAsTheReference() {
        checkLoraDelta(0, 17, 4, false);
        checkLoraDelta(3, 0, 4, false);
        for (int leftLength : new int[] {0, 3}) {
            float[] want = new float[12];
            float[] got = new float[12];
            float[] left = new float[leftLength];
            Arrays.fill(left, 0.5f);
            float[] right = {1f, 2f, 3f, 4f};
            Class<?> wantThrown = thrown(() -> SCALAR.loraDelta(want, 0, 3, 4, left, 0, right, 0, 1f));
            Class<?> gotThrown = thrown(() -> VECTOR.loraDelta(got, 0, 3, 4, left, 0, right, 0, 1f));
            assertEquals(wantThrown, gotThrown, "r = 0, left.length = " + leftLength);
            assertSameBits(want, got, "r = 0, left.length = " + leftLength);
        }
    }

    private static Class<?> thrown(Runnable r) {
        try {
            r.run();
            return null;
        } catch (RuntimeException e) {
            return e.getClass();
        }
    }

    @Test
    void countExponentAllOnesEveryLengthAndPattern() {
        for (int n = 0; n < 200; n++) {
            short[] bits = new short[n + 3];
            for (int i = 0; i < bits.length; i++) {
                bits[i] = (short) random.nextInt(1 << 16);
                if (random.nextInt(4) == 0) {
                    bits[i] |= (short) (random.nextBoolean() ? 0x7C00 : 0x7F80);
                }
            }
            for (short mask : new short[] {0x7C00, 0x7F80}) {
                for (int off = 0; off < 3; off++) {
                    int want = SCALAR.countExponentAllOnes(bits, off, n, mask);
                    int independent = 0;
                    for (int i = off; i < off + n; i++) {
                        independent += (bits[i] & mask) == mask ? 1 : 0;
                    }
                    assertEquals(independent, want, "scalar n=" + n);
                    assertEquals(want, VECTOR.countExponentAllOnes(bits, off, n, mask), VECTOR.name() + " n=" + n
                            + " off=" + off + " mask=" + mask + " (-Dtests.seed=" + seed + ")");
                }
            }
        }
    }

    /** The vector kernel packs a LoRA factor once and reuses it while the same array comes back. */
    @Test
    void loraDeltaReusesAPackedMatrixOnlyForTheSameArray() {
        int rows = 6;
        int cols = 4 * 16 + 5;
        int r = 3;
        float[] left = new float[rows * r];
        float[] right = new float[r * cols];
        for (int i = 0; i < left.length; i++) {
            left[i] = (float) random.nextGaussian();
        }
        for (int i = 0; i < right.length; i++) {
            right[i] = (float) random.nextGaussian();
        }
        float[] changed = right.clone();
        changed[7] += 1f;
        for (float[] matrix : new float[][] {right, changed, right}) {
            float[] w1 = new float[rows * cols];
            float[] w2 = new float[rows * cols];
            SCALAR.loraDelta(w1, 0, rows, cols, left, 0, matrix, r, 2f);
            VECTOR.loraDelta(w2, 0, rows, cols, left, 0, matrix, r, 2f);
            assertSameBits(w1, w2, matrix == right ? "the first matrix" : "another matrix");
        }
    }
}

package dev.dequant4j.internal.cpu;

import static dev.dequant4j.internal.cpu.VectorConstants.BYTES;
import static dev.dequant4j.internal.cpu.VectorConstants.DUP_HI;
import static dev.dequant4j.internal.cpu.VectorConstants.DUP_LO;
import static dev.dequant4j.internal.cpu.VectorConstants.FLOATS;
import static dev.dequant4j.internal.cpu.VectorConstants.INTS;
import static dev.dequant4j.internal.cpu.VectorConstants.NIBBLE_SHIFT;
import static dev.dequant4j.internal.cpu.VectorConstants.PARTS;
import static dev.dequant4j.internal.cpu.VectorConstants.SHORTS;
import static dev.dequant4j.internal.cpu.VectorConstants.SHORT_LANES;
import static dev.dequant4j.internal.cpu.VectorConstants.UNIT;
import static dev.dequant4j.internal.cpu.VectorConstants.VL;

import com.sun.management.HotSpotDiagnosticMXBean;
import java.lang.management.ManagementFactory;
import java.util.Arrays;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;

/**
 * The {@link CpuKernels} on the Vector API. Every method gives the same bits as {@link ScalarKernels}: each lane does
 * the reference's binary32 operations in the reference's order (lanewise {@code mul}/{@code add} are single IEEE
 * operations and the JIT never fuses them). The float16 conversions are the reference's own loops: C2 already
 * compiles them to vector F16C instructions, and their NaN results are the hardware's, so no other code could match.
 *
 * <p>The vector-typed constants live in {@link VectorConstants}, which the constructor does not touch, so that the
 * checks run before any species is created (as in Lucene's {@code PanamaVectorizationProvider}).
 */
public final class VectorKernels implements CpuKernels {
    /** Floats (32 KiB) of the packed right-hand panel in {@link #loraDelta}: it stays in cache while rows stream. */
    private static final int PANEL_FLOATS = 8192;

    /** Throws {@link UnsupportedOperationException} when the Vector API would be emulated or slow on this JVM. */
    public VectorKernels() {
        String problem = problem(VectorConstants.testBits() != null);
        if (problem != null) {
            throw new UnsupportedOperationException(problem);
        }
    }

    /** Why the Vector API should not be used here, or null. {@code testMode} allows any size that exists. */
    private static String problem(boolean testMode) {
        int bits = VectorConstants.testBits() != null ? VectorConstants.testBits()
                : VectorShape.preferredShape().vectorBitSize();
        if (bits < 128) {
            return "the preferred vector size is " + bits + " bits, at least 128 are needed";
        }
        if (!testMode && bits < 256 && System.getProperty("os.arch", "").matches("amd64|x86_64")) {
            return "the CPU has no AVX2 (the preferred vector size is " + bits
                    + " bits), so integer vector operations are not intrinsified";
        }
        String vmInfo = System.getProperty("java.vm.info", "");
        if (vmInfo.contains("emulated-client")) {
            return "the C2 compiler is disabled (java.vm.info: " + vmInfo + ")";
        }
        if (vmInfo.contains("interpreted mode")) {
            return "the JVM runs in interpreted mode (-Xint)";
        }
        HotSpotDiagnosticMXBean hotspot;
        try {
            hotspot = ManagementFactory.getPlatformMXBean(HotSpotDiagnosticMXBean.class);
        } catch (RuntimeException | LinkageError e) {
            hotspot = null;
        }
        if (hotspot == null) {
            return "the JVM is not HotSpot (no HotSpotDiagnosticMXBean), the Vector API may not be intrinsified";
        }
        try {
            if (Boolean.parseBoolean(hotspot.getVMOption("UseJVMCICompiler").getValue())) {
                return "a JVMCI compiler is in use, it does not intrinsify the Vector API";
            }
        } catch (IllegalArgumentException e) {
            // No such flag: a HotSpot built without JVMCI, which is fine.
        }
        return null;
    }

    @Override
    public String name() {
        return "panama-" + VectorConstants.BITS;
    }

    // ---- 4-bit ----

    @Override
    public void dequant4bit(float[] code, byte[] packed, long start, int count, float[] absmax, int blockShift,
                            float[] out, int outOff) {
        if ((1 << blockShift) < UNIT) {
            dequant4bitScalar(code, packed, start, 0, count, absmax, blockShift, out, outOff);
            return;
        }
        long firstBlock = start >>> blockShift;
        long firstByte = start >>> 1;
        // A unit of UNIT elements that starts at a multiple of UNIT lies in one block (blocks are powers of two
        // >= UNIT) and in whole bytes, so it needs one scale and one byte load.
        int head = (int) Math.min(count, (-start) & (UNIT - 1));
        dequant4bitScalar(code, packed, start, 0, head, absmax, blockShift, out, outOff);
        int[] bits = new int[Math.max(16, VL)];
        for (int j = 0; j < 16; j++) {
            bits[j] = Float.floatToRawIntBits(code[j]);
        }
        IntVector t0 = IntVector.fromArray(INTS, bits, 0);
        IntVector t1 = VL <= 8 ? IntVector.fromArray(INTS, bits, VL) : null;
        IntVector t2 = VL == 4 ? IntVector.fromArray(INTS, bits, 8) : null;
        IntVector t3 = VL == 4 ? IntVector.fromArray(INTS, bits, 12) : null;
        int i = head;
        for (; i <= count - UNIT; i += UNIT) {
            long k = start + i;
            float scale = absmax[(int) ((k >>> blockShift) - firstBlock)];
            ByteVector b = ByteVector.fromArray(BYTES, packed, (int) ((k >>> 1) - firstByte));
            int o = outOff + i;
            for (int p = 0; p < PARTS; p++) {
                IntVector x = (IntVector) b.convertShape(VectorOperators.B2I, INTS, p);
                // Element 2j is the high nibble of byte j: duplicate each byte, shift even lanes by 4, keep 4 bits.
                IntVector n0 = x.rearrange(DUP_LO).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(15);
                IntVector n1 = x.rearrange(DUP_HI).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(15);
                lookup(n0, t0, t1, t2, t3).mul(scale).intoArray(out, o);
                lookup(n1, t0, t1, t2, t3).mul(scale).intoArray(out, o + VL);
                o += 2 * VL;
            }
        }
        dequant4bitScalar(code, packed, start, i, count, absmax, blockShift, out, outOff);
    }

    /** The reference loop for elements {@code [from, to)} of a call (indices as in {@link #dequant4bit}). */
    private static void dequant4bitScalar(float[] code, byte[] packed, long start, int from, int to, float[] absmax,
                                          int blockShift, float[] out, int outOff) {
        long firstBlock = start >>> blockShift;
        long firstByte = start >>> 1;
        for (int i = from; i < to; i++) {
            long k = start + i;
            int b = packed[(int) ((k >>> 1) - firstByte)] & 0xFF;
            int nib = (k & 1) == 0 ? b >>> 4 : b & 0x0F;
            out[outOff + i] = code[nib] * absmax[(int) ((k >>> blockShift) - firstBlock)];
        }
    }

    /**
     * {@code code[nibbles]} by {@code selectFrom} on the code's float bits: one table from 16 lanes up, one two-vector
     * select at 8 lanes, two of them and a blend at 4 lanes. The tables are locals of the caller (not fields of a
     * helper object) so that C2 keeps them in registers.
     */
    private static FloatVector lookup(IntVector nibbles, IntVector t0, IntVector t1, IntVector t2, IntVector t3) {
        IntVector v;
        if (VL >= 16) {
            v = nibbles.selectFrom(t0);
        } else if (VL == 8) {
            v = nibbles.selectFrom(t0, t1);
        } else {
            VectorMask<Integer> high = nibbles.compare(VectorOperators.GE, 8);
            v = nibbles.selectFrom(t0, t1).blend(nibbles.selectFrom(t2, t3), high);
        }
        return v.reinterpretAsFloats();
    }

    @Override
    public void absmaxDoubleQuant(byte[] codes, int codesOff, int count, float[] nestedMap, float[] nestedAbsmax,
                                  long firstBlock, float offset, float[] out) {
        // One lookup in a 256-entry table per 4-bit block: vector gathers were slower than this loop on AVX2
        // (docs/BENCHMARKS.md), so it is the reference loop with the nested scale hoisted per run of 256 blocks.
        long nestedBase = firstBlock >>> 8;
        int i = 0;
        while (i < count) {
            long b = firstBlock + i;
            int end = (int) Math.min(count, i + (256 - (b & 255)));
            float nested = nestedAbsmax[(int) ((b >>> 8) - nestedBase)];
            for (; i < end; i++) {
                float t = nestedMap[codes[codesOff + i] & 0xFF] * nested;
                out[i] = t + offset;
            }
        }
    }

    // ---- int8 ----

    @Override
    public void dequantInt8(byte[] q, int qOff, int count, float scb, float[] out, int outOff) {
        float inv127 = ScalarKernels.INV_127;
        int step = BYTES.length();
        int i = 0;
        for (; i <= count - step; i += step) {
            ByteVector b = ByteVector.fromArray(BYTES, q, qOff + i);
            for (int p = 0; p < PARTS; p++) {
                FloatVector f = (FloatVector) b.convertShape(VectorOperators.B2F, FLOATS, p);
                f.mul(scb).mul(inv127).intoArray(out, outOff + i + p * VL);
            }
        }
        for (; i < count; i++) {
            float t = q[qOff + i] * scb;
            out[outOff + i] = t * inv127;
        }
    }

    // ---- half precision ----

    @Override
    public void f16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
        // The reference's own loop: C2 vectorizes it with F16C (JDK-8294588; as fast as any alternative here, see
        // docs/BENCHMARKS.md), and the NaN payloads, which are the hardware's, match by construction.
        ScalarKernels.INSTANCE.f16ToF32(src, srcOff, dst, dstOff, n);
    }

    @Override
    public void bf16ToF32(short[] src, int srcOff, float[] dst, int dstOff, int n) {
        int i = 0;
        for (; i <= n - VL; i += VL) {
            ShortVector s = ShortVector.fromArray(SHORTS, src, srcOff + i);
            IntVector x = (IntVector) s.convertShape(VectorOperators.S2I, INTS, 0);
            x.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(dst, dstOff + i);
        }
        for (; i < n; i++) {
            dst[dstOff + i] = Float.intBitsToFloat(src[srcOff + i] << 16);
        }
    }

    @Override
    public void f32ToF16(float[] src, int srcOff, short[] dst, int dstOff, int n) {
        // The reference's own loop, for the same reasons as f16ToF32: F16C quiets NaNs and drops their low payload
        // bits, where the Java code of Float.floatToFloat16 would keep them, so only the same call gives the same bits.
        ScalarKernels.INSTANCE.f32ToF16(src, srcOff, dst, dstOff, n);
    }

    @Override
    public void f32ToBf16(float[] src, int srcOff, short[] dst, int dstOff, int n) {
        int i = 0;
        for (; i <= n - VL; i += VL) {
            IntVector x = FloatVector.fromArray(FLOATS, src, srcOff + i).reinterpretAsInts();
            VectorMask<Integer> nan = x.and(0x7FFFFFFF).compare(VectorOperators.GT, 0x7F800000);
            IntVector lsb = x.lanewise(VectorOperators.LSHR, 16).and(1);
            IntVector r = x.add(0x7FFF).add(lsb).lanewise(VectorOperators.LSHR, 16).blend(0x7FC0, nan);
            ((ShortVector) r.convertShape(VectorOperators.I2S, SHORTS, 0)).intoArray(dst, dstOff + i);
        }
        for (; i < n; i++) {
            dst[dstOff + i] = ScalarKernels.toBf16(src[srcOff + i]);
        }
    }

    // ---- LoRA ----

    /**
     * Register-blocked: 4 rows x 2 vectors of columns (8 accumulators), {@code k} innermost, so each accumulator does
     * the reference's sequence {@code l0*r0, + l1*r1, ...}. The right-hand matrix is packed per panel of columns into
     * {@code k}-major strips of 2 vectors, so the micro-kernel reads it contiguously from L1. Columns past the last
     * whole strip go through the reference loop.
     */
    @Override
    public void loraDelta(float[] w, int wOff, int rows, int cols, float[] left, int leftOff, float[] right, int r,
                          float scale) {
        if (rows <= 0 || cols <= 0 || r <= 0) {
            // Nothing to do, or invalid: behave exactly as the reference (including its exceptions).
            ScalarKernels.INSTANCE.loraDelta(w, wOff, rows, cols, left, leftOff, right, r, scale);
            return;
        }
        int strip = 2 * VL;
        int vecCols = cols - cols % strip;
        if (vecCols > 0) {
            int panelCols = Math.min(vecCols, Math.max(strip, PANEL_FLOATS / r / strip * strip));
            float[] packed = packed(right, cols, r, vecCols);
            for (int c0 = 0; c0 < vecCols; c0 += panelCols) {
                int pc = Math.min(panelCols, vecCols - c0);
                int base = c0 * r;
                int i = 0;
                for (; i <= rows - 4; i += 4) {
                    for (int s = 0; s < pc; s += strip) {
                        block4(w, wOff + i * cols + c0 + s, cols, left, leftOff + i * r, packed, base + s * r, r,
                                scale);
                    }
                }
                for (; i < rows; i++) {
                    for (int s = 0; s < pc; s += strip) {
                        block1(w, wOff + i * cols + c0 + s, left, leftOff + i * r, packed, base + s * r, r, scale);
                    }
                }
            }
        }
        if (vecCols < cols) {
            loraDeltaScalar(w, wOff, rows, cols, vecCols, left, leftOff, right, r, scale);
        }
    }

    /** The last right-hand matrix this thread packed, and its packed form. */
    private record Packed(float[] right, int cols, int r, float[] packed) {}

    private static final ThreadLocal<Packed> LAST_PACKED = new ThreadLocal<>();

    /**
     * {@code right}'s first {@code vecCols} columns in strips ({@link #pack}: the layout of a panel at column c0 is
     * the whole matrix's layout offset by c0 * r), packed once and reused while the same matrix comes back: an export
     * calls this kernel for every row chunk of a tensor with the same LoRA factor, which is never modified.
     */
    private static float[] packed(float[] right, int cols, int r, int vecCols) {
        Packed p = LAST_PACKED.get();
        if (p == null || p.right() != right || p.cols() != cols || p.r() != r) {
            float[] packed = new float[vecCols * r];
            pack(right, cols, r, 0, vecCols, packed);
            p = new Packed(right, cols, r, packed);
            LAST_PACKED.set(p);
        }
        return p.packed();
    }

    /** Copies columns {@code [c0, c0 + pc)} of {@code right} into strips: strip s, row k at {@code (s*r + k)*2VL}. */
    private static void pack(float[] right, int cols, int r, int c0, int pc, float[] packed) {
        int strip = 2 * VL;
        for (int s = 0; s < pc; s += strip) {
            int dst = s * r;
            for (int k = 0; k < r; k++) {
                System.arraycopy(right, k * cols + c0 + s, packed, dst, strip);
                dst += strip;
            }
        }
    }

    private static void block4(float[] w, int wb, int cols, float[] left, int lb, float[] packed, int pb, int r,
                               float scale) {
        FloatVector p0 = FloatVector.fromArray(FLOATS, packed, pb);
        FloatVector p1 = FloatVector.fromArray(FLOATS, packed, pb + VL);
        float a0 = left[lb];
        float a1 = left[lb + r];
        float a2 = left[lb + 2 * r];
        float a3 = left[lb + 3 * r];
        FloatVector c00 = p0.mul(a0);
        FloatVector c01 = p1.mul(a0);
        FloatVector c10 = p0.mul(a1);
        FloatVector c11 = p1.mul(a1);
        FloatVector c20 = p0.mul(a2);
        FloatVector c21 = p1.mul(a2);
        FloatVector c30 = p0.mul(a3);
        FloatVector c31 = p1.mul(a3);
        // An accumulator is a loop phi, whose type C2 knows only as FloatVector: c.add(x) would leave C2 to bind
        // FloatVector.add's own call of lanewise from that JDK method's profile, which, shared and filled only while
        // it runs interpreted, may have no receiver yet when this method is compiled; C2 then leaves a virtual call
        // into the Java fallback, several times slower, for the rest of the run (docs/BENCHMARKS.md). Calling
        // lanewise here binds it from this method's own profile instead.
        for (int k = 1; k < r; k++) {
            int pk = pb + k * 2 * VL;
            p0 = FloatVector.fromArray(FLOATS, packed, pk);
            p1 = FloatVector.fromArray(FLOATS, packed, pk + VL);
            a0 = left[lb + k];
            a1 = left[lb + r + k];
            a2 = left[lb + 2 * r + k];
            a3 = left[lb + 3 * r + k];
            c00 = c00.lanewise(VectorOperators.ADD, p0.mul(a0));
            c01 = c01.lanewise(VectorOperators.ADD, p1.mul(a0));
            c10 = c10.lanewise(VectorOperators.ADD, p0.mul(a1));
            c11 = c11.lanewise(VectorOperators.ADD, p1.mul(a1));
            c20 = c20.lanewise(VectorOperators.ADD, p0.mul(a2));
            c21 = c21.lanewise(VectorOperators.ADD, p1.mul(a2));
            c30 = c30.lanewise(VectorOperators.ADD, p0.mul(a3));
            c31 = c31.lanewise(VectorOperators.ADD, p1.mul(a3));
        }
        // Written out rather than through a helper: C2 gives up inlining here (NodeCountInliningCutoff) and would
        // box the accumulators.
        FloatVector sv = FloatVector.broadcast(FLOATS, scale);
        int w1 = wb + cols;
        int w2 = wb + 2 * cols;
        int w3 = wb + 3 * cols;
        FloatVector.fromArray(FLOATS, w, wb).add(c00.lanewise(VectorOperators.MUL, sv)).intoArray(w, wb);
        FloatVector.fromArray(FLOATS, w, wb + VL).add(c01.lanewise(VectorOperators.MUL, sv)).intoArray(w, wb + VL);
        FloatVector.fromArray(FLOATS, w, w1).add(c10.lanewise(VectorOperators.MUL, sv)).intoArray(w, w1);
        FloatVector.fromArray(FLOATS, w, w1 + VL).add(c11.lanewise(VectorOperators.MUL, sv)).intoArray(w, w1 + VL);
        FloatVector.fromArray(FLOATS, w, w2).add(c20.lanewise(VectorOperators.MUL, sv)).intoArray(w, w2);
        FloatVector.fromArray(FLOATS, w, w2 + VL).add(c21.lanewise(VectorOperators.MUL, sv)).intoArray(w, w2 + VL);
        FloatVector.fromArray(FLOATS, w, w3).add(c30.lanewise(VectorOperators.MUL, sv)).intoArray(w, w3);
        FloatVector.fromArray(FLOATS, w, w3 + VL).add(c31.lanewise(VectorOperators.MUL, sv)).intoArray(w, w3 + VL);
    }

    private static void block1(float[] w, int wb, float[] left, int lb, float[] packed, int pb, int r, float scale) {
        float a = left[lb];
        FloatVector c0 = FloatVector.fromArray(FLOATS, packed, pb).mul(a);
        FloatVector c1 = FloatVector.fromArray(FLOATS, packed, pb + VL).mul(a);
        for (int k = 1; k < r; k++) {
            int pk = pb + k * 2 * VL;
            a = left[lb + k];
            c0 = c0.lanewise(VectorOperators.ADD, FloatVector.fromArray(FLOATS, packed, pk).mul(a));
            c1 = c1.lanewise(VectorOperators.ADD, FloatVector.fromArray(FLOATS, packed, pk + VL).mul(a));
        }
        FloatVector sv = FloatVector.broadcast(FLOATS, scale);
        FloatVector.fromArray(FLOATS, w, wb).add(c0.lanewise(VectorOperators.MUL, sv)).intoArray(w, wb);
        FloatVector.fromArray(FLOATS, w, wb + VL).add(c1.lanewise(VectorOperators.MUL, sv)).intoArray(w, wb + VL);
    }

    /** The reference loop on columns {@code [c0, cols)}. */
    private static void loraDeltaScalar(float[] w, int wOff, int rows, int cols, int c0, float[] left, int leftOff,
                                        float[] right, int r, float scale) {
        for (int i = 0; i < rows; i++) {
            int lb = leftOff + i * r;
            int wb = wOff + i * cols;
            for (int c = c0; c < cols; c++) {
                float acc = left[lb] * right[c];
                for (int k = 1; k < r; k++) {
                    acc = acc + left[lb + k] * right[k * cols + c];
                }
                w[wb + c] = w[wb + c] + acc * scale;
            }
        }
    }

    /**
     * Lane-parallel float32 sums over runs of at most {@link #STATS_RUN} elements, each run's lanes then added in
     * double: within 1e-4 of the reference for any realistic weights, at vector speed.
     */
    @Override
    public void deltaStats(float[] base, float[] merged, int n, double[] acc) {
        int vecEnd = n - n % VL;
        double max = acc[0];
        for (int run = 0; run < vecEnd; run += STATS_RUN) {
            int end = Math.min(vecEnd, run + STATS_RUN);
            FloatVector d2 = FloatVector.zero(FLOATS);
            FloatVector b2 = FloatVector.zero(FLOATS);
            FloatVector mx = FloatVector.zero(FLOATS);
            for (int i = run; i < end; i += VL) {
                FloatVector b = FloatVector.fromArray(FLOATS, base, i);
                FloatVector d = FloatVector.fromArray(FLOATS, merged, i).sub(b);
                b2 = b.fma(b, b2);
                d2 = d.fma(d, d2);
                mx = mx.lanewise(VectorOperators.MAX, d.abs()); // not mx.max(..): see block4
            }
            acc[1] += sumLanes(d2);
            acc[2] += sumLanes(b2);
            max = Math.max(max, mx.reduceLanes(VectorOperators.MAX));
        }
        acc[0] = max;
        if (vecEnd < n) {
            ScalarKernels.INSTANCE.deltaStats(Arrays.copyOfRange(base, vecEnd, n),
                    Arrays.copyOfRange(merged, vecEnd, n),
                    n - vecEnd, acc);
        }
    }

    /**
     * The lanes of {@code v} added in lane order, in double. Not {@code reduceLanes(ADD)}: its order of additions
     * differs between the compiled intrinsic and the Java fallback that runs before C2 compiles the kernel, so the
     * manifest's merge figures would change from run to run with the timing of the compilation.
     */
    private static double sumLanes(FloatVector v) {
        double sum = 0;
        for (int i = 0; i < VL; i++) {
            sum += v.lane(i);
        }
        return sum;
    }

    /** Elements summed in float32 lanes before the lanes go into double. */
    private static final int STATS_RUN = 4096;

    @Override
    public int countExponentAllOnes(short[] bits, int off, int n, short mask) {
        ShortVector m = ShortVector.broadcast(SHORT_LANES, mask);
        int count = 0;
        int i = 0;
        for (; i <= n - SHORT_LANES.length(); i += SHORT_LANES.length()) {
            count += ShortVector.fromArray(SHORT_LANES, bits, off + i).and(m).compare(VectorOperators.EQ, m)
                    .trueCount();
        }
        return count + ScalarKernels.INSTANCE.countExponentAllOnes(bits, off + i, n - i, mask);
    }
}

package dev.dequant4j.internal.gguf;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * {@link SubBlockSearch} on the Vector API: lane {@code j} is sub-block {@code j}, and does exactly the binary32
 * operations of {@code GgmlQuantize.makeQkx2Quants} in their order (lanewise {@code mul}/{@code add}/{@code div} are
 * single IEEE operations, never fused; {@code nearest_int} is the same magic-number addition; the "keep if better"
 * branches are lane selects). The values are transposed first so that element {@code i} of all sub-blocks is one
 * load. Eight lanes (256 bits) where the CPU has them, rounds of four at 128 bits.
 */
public final class VectorSubBlockSearch implements SubBlockSearch {
    private static final int SUB = 8;
    private static final int N = 32;
    private static final int QK_K = 256;
    /** q6_K's sub-blocks of 16 values, and its {@code nmax}. */
    private static final int SUB6 = 16;
    private static final int NMAX6 = 32;
    private static final float GROUP_MAX_EPS = 1e-15f;
    private static final int BITS = Math.min(256, Integer.getInteger("dequant4j.vector.bits",
            VectorShape.preferredShape().vectorBitSize()));
    private static final VectorSpecies<Float> FLOATS = VectorSpecies.of(float.class, VectorShape.forBitSize(BITS));
    private static final VectorSpecies<Integer> INTS = VectorSpecies.of(int.class, VectorShape.forBitSize(BITS));
    private static final int L = FLOATS.length();

    /** Per-thread transposed scratch: element i of sub-block j at [i * 8 + j]. */
    private static final class Scratch {
        final float[] x = new float[N * SUB];
        final float[] w = new float[N * SUB];
        final float[] laux = new float[N * SUB];
        final float[] best = new float[N * SUB];
        final float[] lanes = new float[SUB];
        final float[] x6 = new float[QK_K];
        final float[] laux6 = new float[QK_K];
        final float[] best6 = new float[QK_K];
    }

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    @Override
    public void makeQkx2Quants8(float[] x, int xb, float[] weights, int nmax, float rmin, float rdelta, int nstep,
            byte[] l, float[] scales, float[] mins) {
        Scratch s = SCRATCH.get();
        for (int j = 0; j < SUB; j++) {
            for (int i = 0; i < N; i++) {
                s.x[i * SUB + j] = x[xb + N * j + i];
                s.w[i * SUB + j] = weights[N * j + i];
            }
        }
        for (int o = 0; o < SUB; o += L) {
            search(s, o, nmax, rmin, rdelta, nstep, scales, mins);
        }
        for (int j = 0; j < SUB; j++) {
            for (int i = 0; i < N; i++) {
                l[N * j + i] = (byte) (int) s.best[i * SUB + j];
            }
        }
    }

    /** {@code nearest_int(iscale * (x - min))} clamped to [0, nmax], as floats. */
    private static FloatVector quants(FloatVector iscale, FloatVector min, FloatVector xi, int nmax) {
        FloatVector f = iscale.mul(xi.sub(min)).add(12582912.f);
        IntVector q = f.reinterpretAsInts().and(0x007fffff).sub(0x00400000).max(0).min(nmax);
        return (FloatVector) q.convert(VectorOperators.I2F, 0);
    }

    private static void search(Scratch s, int o, int nmax, float rmin, float rdelta, int nstep, float[] scales,
            float[] mins) {
        float[] xs = s.x;
        float[] ws = s.w;
        FloatVector zero = FloatVector.zero(FLOATS);
        FloatVector min = FloatVector.fromArray(FLOATS, xs, o);
        FloatVector max = min;
        FloatVector sumW = FloatVector.fromArray(FLOATS, ws, o);
        FloatVector sumX = sumW.mul(min);
        for (int i = 1; i < N; i++) {
            FloatVector xi = FloatVector.fromArray(FLOATS, xs, i * SUB + o);
            min = min.blend(xi, xi.compare(VectorOperators.LT, min));
            max = max.blend(xi, xi.compare(VectorOperators.GT, max));
            FloatVector w = FloatVector.fromArray(FLOATS, ws, i * SUB + o);
            sumW = sumW.add(w);
            sumX = sumX.add(w.mul(xi));
        }
        min = min.blend(zero, min.compare(VectorOperators.GT, 0f));
        VectorMask<Float> flat = max.compare(VectorOperators.EQ, min);
        FloatVector flatMin = min;
        FloatVector iscale = FloatVector.broadcast(FLOATS, (float) nmax).div(max.sub(min));
        FloatVector scale = FloatVector.broadcast(FLOATS, 1f).div(iscale);
        FloatVector bestError = zero;
        for (int i = 0; i < N; i++) {
            int at = i * SUB + o;
            FloatVector xi = FloatVector.fromArray(FLOATS, xs, at);
            FloatVector q = quants(iscale, min, xi, nmax);
            q.intoArray(s.best, at);
            FloatVector diff = scale.mul(q).add(min).sub(xi);
            bestError = bestError.add(FloatVector.fromArray(FLOATS, ws, at).mul(diff.mul(diff)));
        }
        for (int is = 0; is <= nstep; is++) {
            // max - min with the best min so far, as the reference does
            iscale = FloatVector.broadcast(FLOATS, rmin + rdelta * is + nmax).div(max.sub(min));
            FloatVector sumL = zero;
            FloatVector sumL2 = zero;
            FloatVector sumXl = zero;
            for (int i = 0; i < N; i++) {
                int at = i * SUB + o;
                FloatVector xi = FloatVector.fromArray(FLOATS, xs, at);
                FloatVector q = quants(iscale, min, xi, nmax);
                q.intoArray(s.laux, at);
                FloatVector wq = FloatVector.fromArray(FLOATS, ws, at).mul(q);
                sumL = sumL.add(wq);
                sumL2 = sumL2.add(wq.mul(q));
                sumXl = sumXl.add(wq.mul(xi));
            }
            FloatVector det = sumW.mul(sumL2).sub(sumL.mul(sumL));
            VectorMask<Float> solvable = det.compare(VectorOperators.GT, 0f);
            if (!solvable.anyTrue()) {
                continue;
            }
            FloatVector thisScale = sumW.mul(sumXl).sub(sumX.mul(sumL)).div(det);
            FloatVector thisMin = sumL2.mul(sumX).sub(sumL.mul(sumXl)).div(det);
            VectorMask<Float> positive = thisMin.compare(VectorOperators.GT, 0f);
            thisMin = thisMin.blend(zero, positive);
            thisScale = thisScale.blend(sumXl.div(sumL2), positive);
            FloatVector curError = zero;
            for (int i = 0; i < N; i++) {
                int at = i * SUB + o;
                FloatVector diff = thisScale.mul(FloatVector.fromArray(FLOATS, s.laux, at)).add(thisMin)
                        .sub(FloatVector.fromArray(FLOATS, xs, at));
                curError = curError.add(FloatVector.fromArray(FLOATS, ws, at).mul(diff.mul(diff)));
            }
            VectorMask<Float> better = solvable.and(curError.compare(VectorOperators.LT, bestError));
            if (better.anyTrue()) {
                for (int i = 0; i < N; i++) {
                    int at = i * SUB + o;
                    FloatVector.fromArray(FLOATS, s.best, at)
                            .blend(FloatVector.fromArray(FLOATS, s.laux, at), better).intoArray(s.best, at);
                }
                bestError = bestError.blend(curError, better);
                scale = scale.blend(thisScale, better);
                min = min.blend(thisMin, better);
            }
        }
        if (flat.anyTrue()) {
            for (int i = 0; i < N; i++) {
                int at = i * SUB + o;
                FloatVector.fromArray(FLOATS, s.best, at).blend(zero, flat).intoArray(s.best, at);
            }
            scale = scale.blend(zero, flat);
            min = min.blend(flatMin, flat);
        }
        scale.intoArray(scales, o);
        min.intoArray(s.lanes, 0);
        for (int k = 0; k < L; k++) {
            mins[o + k] = -s.lanes[k];
        }
    }
    @Override
    public void makeQxQuants16(float[] x, int xb, byte[] l, float[] scales) {
        Scratch s = SCRATCH.get();
        for (int j = 0; j < SUB6; j++) {
            for (int i = 0; i < 16; i++) {
                s.x6[i * SUB6 + j] = x[xb + 16 * j + i];
            }
        }
        for (int o = 0; o < SUB6; o += L) {
            searchQx(s, o, scales);
        }
        for (int j = 0; j < SUB6; j++) {
            for (int i = 0; i < 16; i++) {
                l[16 * j + i] = (byte) (int) s.best6[i * SUB6 + j];
            }
        }
    }

    /** {@code nearest_int(iscale * x)} clamped to [-32, 31], as floats. */
    private static FloatVector symmetricQuants(FloatVector iscale, FloatVector xi) {
        FloatVector f = iscale.mul(xi).add(12582912.f);
        IntVector q = f.reinterpretAsInts().and(0x007fffff).sub(0x00400000).max(-NMAX6).min(NMAX6 - 1);
        return (FloatVector) q.convert(VectorOperators.I2F, 0);
    }

    private static void searchQx(Scratch s, int o, float[] scales) {
        float[] xs = s.x6;
        FloatVector zero = FloatVector.zero(FLOATS);
        FloatVector max = zero;
        FloatVector amax = zero;
        for (int i = 0; i < 16; i++) {
            FloatVector xi = FloatVector.fromArray(FLOATS, xs, i * SUB6 + o);
            FloatVector ax = xi.abs();
            VectorMask<Float> larger = ax.compare(VectorOperators.GT, amax);
            amax = amax.blend(ax, larger);
            max = max.blend(xi, larger);
        }
        VectorMask<Float> flat = amax.compare(VectorOperators.LT, GROUP_MAX_EPS);
        FloatVector iscale = FloatVector.broadcast(FLOATS, (float) -NMAX6).div(max);
        FloatVector sumlx = zero;
        FloatVector suml2 = zero;
        for (int i = 0; i < 16; i++) {
            int at = i * SUB6 + o;
            FloatVector xi = FloatVector.fromArray(FLOATS, xs, at);
            FloatVector q = symmetricQuants(iscale, xi);
            q.add((float) NMAX6).intoArray(s.best6, at);
            FloatVector w = xi.mul(xi);
            sumlx = sumlx.add(w.mul(xi).mul(q));
            suml2 = suml2.add(w.mul(q).mul(q));
        }
        FloatVector scale = sumlx.div(suml2).blend(zero, suml2.compare(VectorOperators.EQ, 0f));
        FloatVector best = scale.mul(sumlx);
        for (int is = -9; is <= 9; is++) {
            if (is == 0) {
                continue;
            }
            iscale = FloatVector.broadcast(FLOATS, -(NMAX6 + 0.1f * is)).div(max);
            sumlx = zero;
            suml2 = zero;
            for (int i = 0; i < 16; i++) {
                int at = i * SUB6 + o;
                FloatVector xi = FloatVector.fromArray(FLOATS, xs, at);
                FloatVector q = symmetricQuants(iscale, xi);
                q.intoArray(s.laux6, at);
                FloatVector w = xi.mul(xi);
                sumlx = sumlx.add(w.mul(xi).mul(q));
                suml2 = suml2.add(w.mul(q).mul(q));
            }
            VectorMask<Float> better = suml2.compare(VectorOperators.GT, 0f)
                    .and(sumlx.mul(sumlx).compare(VectorOperators.GT, best.mul(suml2)));
            if (better.anyTrue()) {
                for (int i = 0; i < 16; i++) {
                    int at = i * SUB6 + o;
                    FloatVector.fromArray(FLOATS, s.best6, at)
                            .blend(FloatVector.fromArray(FLOATS, s.laux6, at).add((float) NMAX6), better)
                            .intoArray(s.best6, at);
                }
                FloatVector trial = sumlx.div(suml2);
                scale = scale.blend(trial, better);
                best = best.blend(trial.mul(sumlx), better);
            }
        }
        if (flat.anyTrue()) {
            for (int i = 0; i < 16; i++) {
                int at = i * SUB6 + o;
                FloatVector.fromArray(FLOATS, s.best6, at).blend(zero, flat).intoArray(s.best6, at);
            }
            scale = scale.blend(zero, flat);
        }
        scale.intoArray(scales, o);
    }
}

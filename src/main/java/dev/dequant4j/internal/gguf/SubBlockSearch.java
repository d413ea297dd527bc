package dev.dequant4j.internal.gguf;

import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.cpu.ScalarKernels;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;

/**
 * The per-sub-block scale searches of the K-quants for all sub-blocks of one 256-value super-block at once. The
 * sub-blocks are independent, so the Vector API implementation runs one per lane, each lane doing {@link GgmlQuantize}'s float
 * operations in its order; the scalar search stays the reference it is tested against.
 */
interface SubBlockSearch {
    /**
     * Searches the scale and min of each sub-block {@code j} of {@code x[xb + 32 j ..]} with the weights
     * {@code weights[32 j ..]}; writes its quants to {@code l[32 j ..]}, its scale to {@code scales[j]} and its
     * negated min to {@code mins[j]}.
     */
    void makeQkx2Quants8(float[] x, int xb, float[] weights, int nmax, float rmin, float rdelta, int nstep, byte[] l,
            float[] scales, float[] mins);

    /**
     * {@code make_qx_quants} (rmse_type 1, no importance weights, {@code nmax} 32) for each of the sixteen 16-value
     * sub-blocks {@code j} of {@code x[xb + 16 j ..]}, as q6_K calls it: writes its quants, offset by 32, to
     * {@code l[16 j ..]} and its scale to {@code scales[j]}.
     */
    void makeQxQuants16(float[] x, int xb, byte[] l, float[] scales);

    /** The Vector API search when the vector CPU kernels are in use (their checks passed), else null. */
    static SubBlockSearch lookup() {
        if (Kernels.get() instanceof ScalarKernels) {
            return null;
        }
        try {
            Class<?> cls = MethodHandles.lookup().findClass("dev.dequant4j.internal.gguf.VectorSubBlockSearch");
            return (SubBlockSearch) MethodHandles.lookup()
                    .findConstructor(cls, MethodType.methodType(void.class)).invoke();
        } catch (Throwable e) {
            System.getLogger("dev.dequant4j").log(System.Logger.Level.INFO,
                    "scalar K-quant search: the Vector API one failed to load: " + e);
            return null;
        }
    }
}

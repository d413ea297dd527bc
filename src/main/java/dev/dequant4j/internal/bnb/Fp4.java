package dev.dequant4j.internal.bnb;

/**
 * bitsandbytes' FP4 code ({@code get_4bit_type("fp4")} = {@code [0, .0625, 8, 12, 4, 6, 2, 3, -0, ...] / 12}), index =
 * nibble, exact float32 bits. Nibble 8 is +0.0 as in the stored {@code quant_map} and bnb's CPU backend (bnb's CUDA
 * kernel gives -0.0 there); every dequant4j backend uses this table.
 */
public final class Fp4 {
    private Fp4() {}

    private static final int[] BITS = {
        0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000,
        0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000,
    };

    /** A fresh copy of the 16 code values. */
    public static float[] code() {
        float[] c = new float[16];
        for (int i = 0; i < 16; i++) {
            c[i] = Float.intBitsToFloat(BITS[i]);
        }
        return c;
    }
}

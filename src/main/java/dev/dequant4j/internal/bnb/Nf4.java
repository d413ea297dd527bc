package dev.dequant4j.internal.bnb;

/** bitsandbytes' NF4 code ({@code get_4bit_type("nf4")}), index = nibble, exact float32 bits. */
public final class Nf4 {
    private Nf4() {}

    private static final int[] BITS = {
        0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
        0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
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

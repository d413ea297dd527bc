package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class GgufModelTest {
    private static int[] bits(float[] f) {
        int[] b = new int[f.length];
        for (int i = 0; i < f.length; i++) {
            b[i] = Float.floatToRawIntBits(f[i]);
        }
        return b;
    }

    /**
     * The bits torch 2.13 (CPU) gives for convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors on Llama 3.1 8B's
     * rope parameters (head_dim 128, theta 500000, factor 8) and Llama 3.2's (factor 32): only the smoothed band
     * depends on the arithmetic, and it matches.
     */
    @Test
    void llama3RopeFactorsEqualTorchs() {
        int[] llama31 = bits(GgufModel.llama3RopeFactors(500000.0, 128, 8.0, 1.0, 4.0, 8192));
        assertEquals(64, llama31.length);
        assertArrayEquals(new int[] {0x3f800000, 0x3f9a8ed5, 0x3fc6d64a, 0x4001af1d, 0x402c732e, 0x406bcace,
            0x40a83c06, 0x41000000}, java.util.Arrays.copyOfRange(llama31, 28, 36));
        int[] llama32 = bits(GgufModel.llama3RopeFactors(500000.0, 64, 32.0, 1.0, 4.0, 8192));
        assertArrayEquals(new int[] {0x3f800000, 0x3fd35ec2, 0x4052b46f, 0x411aaaee, 0x42000000},
                java.util.Arrays.copyOfRange(llama32, 14, 19));
        int[] llama32x128 = bits(GgufModel.llama3RopeFactors(500000.0, 128, 32.0, 1.0, 4.0, 8192));
        assertArrayEquals(new int[] {0x3f800000, 0x3f9e126b, 0x3fd35ec2, 0x4011b4ca, 0x4052b46f, 0x40a57db9,
            0x411aaaee, 0x42000000}, java.util.Arrays.copyOfRange(llama32x128, 28, 36));
    }

    /** gguf-py's size_label, as the converter writes it into general.size_label. */
    @Test
    void sizeLabels() {
        assertEquals("119K", GgufModel.sizeLabel(119_232));
        assertEquals("8.0B", GgufModel.sizeLabel(8_030_261_248L));
        assertEquals("1.2B", GgufModel.sizeLabel(1_235_814_400L));
    }
}

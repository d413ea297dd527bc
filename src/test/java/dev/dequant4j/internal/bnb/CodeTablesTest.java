package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The built-in NF4/FP4 tables are bitsandbytes' (the quant_map it stored in the fixtures), every nibble decodes
 * high nibble first with them, and FP4 nibble 8 is +0.0 on every read path even where a stored quant_map says -0.0
 * (bitsandbytes ignores the stored map and dispatches on quant_type).
 */
class CodeTablesTest {
    @TempDir
    Path tmp;

    @Test
    void builtInTablesAreTheOnesBitsandbytesStored() {
        for (int i = 0; i < 16; i++) {
            assertEquals(Float.floatToRawIntBits(BnbQuantizer.NF4[i]), Float.floatToRawIntBits(Nf4.code()[i]),
                    "nf4 " + i);
            assertEquals(Float.floatToRawIntBits(BnbQuantizer.FP4[i]), Float.floatToRawIntBits(Fp4.code()[i]),
                    "fp4 " + i);
        }
        assertEquals(0, Float.floatToRawIntBits(BnbQuantizer.FP4[8]), "bitsandbytes stored +0.0 for FP4 nibble 8");
    }

    @ParameterizedTest
    @ValueSource(strings = {"nf4", "fp4"})
    void everyNibbleDecodesHighNibbleFirstWithTheBuiltInTable(String type) {
        // bytes 0x01, 0x23, ..., 0xEF and 0x10, 0x32, ..., 0xFE: every nibble in both positions
        byte[] packed = new byte[16];
        for (int i = 0; i < 8; i++) {
            packed[i] = (byte) ((2 * i) << 4 | (2 * i + 1));
            packed[8 + i] = (byte) ((2 * i + 1) << 4 | (2 * i));
        }
        float scale = 0.75f;
        float[] stored = (type.equals("nf4") ? BnbQuantizer.NF4 : BnbQuantizer.FP4).clone();
        // a stored map as bitsandbytes' CUDA code would have it: -0.0 at FP4 nibble 8 (ignored, like bnb does)
        stored[8] = type.equals("fp4") ? -0.0f : stored[8];
        String w = "m.weight";
        CheckpointBuilder b = new CheckpointBuilder()
                .put(w, DType.U8, new long[] {16, 1}, packed)
                .putFloats(w + ".absmax", new long[] {1}, new float[] {scale})
                .putFloats(w + ".quant_map", new long[] {16}, stored)
                .putString(w + ".quant_state.bitsandbytes__" + type, "{\"quant_type\": \"" + type
                        + "\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [4, 8]}");
        float[] table = type.equals("nf4") ? BnbQuantizer.NF4 : BnbQuantizer.FP4;
        float[] want = new float[32];
        for (int k = 0; k < 32; k++) {
            int byteValue = packed[k / 2] & 0xFF;
            int nib = k % 2 == 0 ? byteValue >> 4 : byteValue & 0xF;
            want[k] = (float) ((double) table[nib] * scale);
        }
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("c")));
             Arena arena = Arena.ofConfined()) {
            SyntheticFourBitTest.assertBits(want, 0, c.readFloats(w), w);
            SyntheticFourBitTest.assertRoundedReads(c, w, want);
            if (type.equals("fp4")) {
                // nibble 8 is element 8 (high nibble of byte 4, 0x89) and element 25 (low nibble of byte 12, 0x98)
                int[] eights = {8, 25};
                MemorySegment f16 = arena.allocate(64);
                MemorySegment bf16 = arena.allocate(64);
                c.read(w, DType.F16, f16);
                c.read(w, DType.BF16, bf16);
                for (int k : eights) {
                    assertEquals(8, k % 2 == 0 ? (packed[k / 2] & 0xFF) >> 4 : packed[k / 2] & 0xF);
                    assertEquals(0, Float.floatToRawIntBits(c.readFloats(w)[k]), "f32 +0.0 at " + k);
                    assertEquals(0, f16.getAtIndex(ValueLayout.JAVA_SHORT, k), "f16 +0.0 at " + k);
                    assertEquals(0, bf16.getAtIndex(ValueLayout.JAVA_SHORT, k), "bf16 +0.0 at " + k);
                }
            }
        }
    }
}

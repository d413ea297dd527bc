package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * GgmlQuantize against files written by llama.cpp's own tools (fixtures/gguf/README.md): the F32 GGUF's tensors,
 * quantized here, must equal the quantized file's tensors byte for byte.
 */
class GgmlQuantizeTest {
    static Path fixture(String name) {
        try {
            return Path.of(GgmlQuantizeTest.class.getResource("/fixtures/gguf/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    /** An F32 tensor's values, or an F16 tensor's widened exactly (as llama-quantize widens an F16 input). */
    static float[] floats(GgufFile f, GgufFile.Tensor t) {
        if (t.type() == GgmlType.F16) {
            short[] h = f.data(t).toArray(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN));
            float[] x = new float[h.length];
            for (int i = 0; i < h.length; i++) {
                x[i] = Float.float16ToFloat(h[i]);
            }
            return x;
        }
        assertEquals(GgmlType.F32, t.type(), t.name());
        return f.data(t).toArray(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN));
    }

    /** The default path's bytes (the Vector API search where it loads), checked equal to the scalar reference's. */
    static byte[] quantize(GgmlType type, float[] src, long[] ne) {
        int cols = Math.toIntExact(ne[0]);
        int rows = src.length / cols;
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(rows * GgmlQuantize.rowSize(type, cols)));
        GgmlQuantize.quantize(type, src, 0, rows, cols, out);
        assertEquals(0, out.remaining());
        ByteBuffer scalar = ByteBuffer.allocate(out.capacity());
        GgmlQuantize.quantize(type, src, 0, rows, cols, scalar, null);
        assertArrayEquals(scalar.array(), out.array(), "scalar and default path");
        return out.array();
    }

    /** Tensors of {@code quantized} in {@code type}, quantized here from the same tensor of {@code f32} (or F16). */
    static int assertSameBytes(String f32, String quantized, GgmlType type) {
        int compared = 0;
        try (GgufFile ref = GgufFile.open(fixture(f32)); GgufFile q = GgufFile.open(fixture(quantized))) {
            for (GgufFile.Tensor t : q.tensors().values()) {
                if (t.type() != type) {
                    continue;
                }
                GgufFile.Tensor src = ref.tensors().get(t.name());
                assertArrayEquals(t.ne(), src.ne(), t.name());
                byte[] ours = src.type() == type ? ref.data(src).toArray(ValueLayout.JAVA_BYTE)
                        : quantize(type, floats(ref, src), src.ne());
                assertArrayEquals(q.data(t).toArray(ValueLayout.JAVA_BYTE), ours, t.name());
                compared++;
            }
        }
        return compared;
    }

    @Test
    void q8_0EqualsConvertHfToGguf() {
        int n = assertSameBytes("llama-bpe/llama-lora-f32.gguf", "llama-bpe/llama-lora-q8_0.gguf", GgmlType.Q8_0);
        assertEquals(16, n, "Q8_0 tensors compared");
    }

    /**
     * Every tensor llama-quantize wrote from the F32 GGUF (Q4_K, Q5_K, Q6_K; the fallbacks Q5_0, Q5_1, Q8_0 where
     * rows are not whole 256-blocks; F32 copies), quantized here from the same F32 tensor; and from the F16 GGUF,
     * which llama-quantize widens to F32 first (the two-roundings path: its bytes differ from the F32 input's).
     */
    @ParameterizedTest
    @CsvSource({"llama256/llama256-f32.gguf, llama256/llama256-q4_k_m.gguf",
        "llama256/llama256-f32.gguf, llama256/llama256-q5_k_m.gguf",
        "llama256/llama256-f32.gguf, llama256/llama256-q6_k.gguf",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q4_k_m.gguf",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q5_k_m.gguf",
        "llama-bpe/llama-lora-f32.gguf, llama-bpe/llama-lora-q6_k.gguf",
        "llama-bpe/llama-lora-f16.gguf, llama-bpe/llama-lora-f16-q4_k_m.gguf",
        "llama-bpe/llama-lora-f16.gguf, llama-bpe/llama-lora-f16-q5_k_m.gguf",
        "llama-bpe/llama-lora-f16.gguf, llama-bpe/llama-lora-f16-q6_k.gguf"})
    void everyTensorEqualsLlamaQuantize(String f32, String quantized) {
        int compared = 0;
        try (GgufFile q = GgufFile.open(fixture(quantized))) {
            for (GgmlType type : GgmlType.values()) {
                if (GgmlQuantize.supports(type)) {
                    compared += assertSameBytes(f32, quantized, type);
                }
            }
            assertEquals(q.tensors().size(), compared);
        }
    }

    /** Edge rows (zeros, -0.0, constants, an outlier, subnormals, overflow to inf, ties) against ggml's own bytes. */
    @ParameterizedTest
    @ValueSource(strings = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K", "f16"})
    void edgeRowsEqualGgml(String name) throws IOException {
        GgmlType type = GgmlType.valueOf(name.toUpperCase(java.util.Locale.ROOT));
        java.nio.FloatBuffer fb = ByteBuffer.wrap(Files.readAllBytes(fixture("quant/edge-rows.f32")))
                .order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        float[] x = new float[fb.remaining()];
        fb.get(x);
        byte[] expected = Files.readAllBytes(fixture("quant/edge-rows." + name));
        int rowSize = (int) GgmlQuantize.rowSize(type, 256);
        int rows = x.length / 256;
        assertEquals(rows * rowSize, expected.length);
        for (int r = 0; r < rows; r++) {
            float[] row = Arrays.copyOfRange(x, r * 256, r * 256 + 256);
            assertArrayEquals(Arrays.copyOfRange(expected, r * rowSize, (r + 1) * rowSize),
                    quantize(type, row, new long[] {256, 1}), name + " row " + r);
        }
    }

    @Test
    void rowSizeIsBlocksTimesTypeSize() {
        assertEquals(34L * 4, GgmlQuantize.rowSize(GgmlType.Q8_0, 128));
        assertEquals(144L * 14, GgmlQuantize.rowSize(GgmlType.Q4_K, 3584));
        assertEquals(210, GgmlQuantize.rowSize(GgmlType.Q6_K, 256));
        assertThrows(IllegalArgumentException.class, () -> GgmlQuantize.rowSize(GgmlType.Q4_K, 4608 + 32));
    }

    @Test
    void refusesPartialBlocksShortSourcesAndShortBuffers() {
        float[] x = new float[512];
        ByteBuffer big = ByteBuffer.allocate(4096);
        assertThrows(IllegalArgumentException.class, () -> GgmlQuantize.quantize(GgmlType.Q5_K, x, 0, 1, 288, big));
        assertThrows(IllegalArgumentException.class, () -> GgmlQuantize.quantize(GgmlType.Q8_0, x, 32, 4, 128, big));
        assertThrows(IllegalArgumentException.class,
                () -> GgmlQuantize.quantize(GgmlType.Q6_K, x, 0, 2, 256, ByteBuffer.allocate(419)));
        assertThrows(IllegalArgumentException.class, () -> GgmlQuantize.quantize(GgmlType.IQ2_XS, x, 0, 2, 256, big));
        assertEquals(0, big.position());
    }

    @Test
    void writesLittleEndianWhateverTheBufferOrderAndAdvancesThePosition() {
        float[] x = new float[64];
        for (int i = 0; i < x.length; i++) {
            x[i] = (i - 20) * 0.37f;
        }
        ByteBuffer le = ByteBuffer.allocate(100).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer be = ByteBuffer.allocate(100).order(ByteOrder.BIG_ENDIAN);
        le.position(3);
        be.position(3);
        GgmlQuantize.quantize(GgmlType.Q8_0, x, 0, 2, 32, le);
        GgmlQuantize.quantize(GgmlType.Q8_0, x, 0, 2, 32, be);
        assertEquals(3 + 68, le.position());
        assertArrayEquals(le.array(), be.array());
        // block 0: amax = 20 * 0.37, d = amax / 127 stored as f16
        assertEquals(Float.floatToFloat16(20 * 0.37f / 127), le.getShort(3));
    }
}

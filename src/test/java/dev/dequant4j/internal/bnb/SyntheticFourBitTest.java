package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TensorInfo;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The reader is general, not tuned to the fixtures: synthetic bitsandbytes-style checkpoints with other blocksizes,
 * shapes (odd element counts, rows not aligned to blocks, several nested 256-blocks), quant-state dtypes and
 * quant_storage dtypes dequantize bit for bit to the independently computed values, in whole and in any range.
 */
class SyntheticFourBitTest {
    private static final String W = "model.layers.0.mlp.down_proj.weight";

    @TempDir
    Path tmp;

    static Stream<Arguments> cases() {
        return Stream.of(
                // quant type, blocksize, shape, double quant, quant-state dtype, quant_storage
                Arguments.of("nf4", 32, new long[] {37, 53}, true, "bfloat16", DType.U8),
                // 609 blocks: three nested 256-blocks, the last partial
                Arguments.of("fp4", 32, new long[] {151, 129}, true, "float16", DType.U8),
                Arguments.of("nf4", 64, new long[] {5, 7}, false, "float32", DType.U8),
                Arguments.of("nf4", 128, new long[] {100, 90}, false, "float32", DType.U8),
                Arguments.of("fp4", 128, new long[] {33, 45}, false, "bfloat16", DType.U8),
                Arguments.of("nf4", 256, new long[] {3, 1001}, true, "bfloat16", DType.U8),
                Arguments.of("fp4", 512, new long[] {77}, true, "float32", DType.U8),
                // 301 blocks of 1024: two nested blocks
                Arguments.of("fp4", 1024, new long[] {600, 513}, true, "float32", DType.U8),
                Arguments.of("nf4", 2048, new long[] {9, 1111}, false, "float16", DType.U8),
                // 258 blocks of 4096: two nested blocks, the last one of 2 blocks, the last block partial
                Arguments.of("nf4", 4096, new long[] {257, 4099}, true, "bfloat16", DType.U8),
                Arguments.of("nf4", 4096, new long[] {3, 5}, true, "float16", DType.U8),
                // quant_storage: the same bytes viewed as a wider dtype, shape [bytes / itemsize, 1]
                Arguments.of("nf4", 64, new long[] {64, 96}, true, "bfloat16", DType.BF16),
                Arguments.of("fp4", 64, new long[] {3, 501}, true, "float16", DType.F16),
                Arguments.of("nf4", 128, new long[] {17, 120}, false, "float32", DType.F32),
                Arguments.of("fp4", 32, new long[] {23, 89}, true, "bfloat16", DType.F32));
    }

    @ParameterizedTest(name = "{0} bs={1} {2} dq={3} {4} storage={5}")
    @MethodSource("cases")
    void dequantizesBitForBit(String quantType, int blocksize, long[] shape, boolean dq, String dtype, DType storage) {
        float[] x = BnbQuantizer.weights(shape, 31L * blocksize + shape[0]);
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(x, shape, quantType, blocksize, dq);
        float[] bias = new float[(int) shape[0]];
        for (int i = 0; i < bias.length; i++) {
            bias[i] = i * 0.25f - 1;
        }
        CheckpointBuilder b = new CheckpointBuilder();
        q.addTo(b, W, storage, dtype, true);
        b.putFloats("model.layers.0.mlp.down_proj.bias", new long[] {bias.length}, bias);
        Path dir = b.write(tmp.resolve("ckpt"));
        float[] want = q.expected();

        try (Checkpoint c = Checkpoint.open(dir)) {
            TensorInfo t = c.tensor(W);
            assertEquals(quantType.equals("nf4") ? QuantKind.NF4 : QuantKind.FP4, t.kind());
            assertArrayEquals(shape, t.shape());
            assertEquals(blocksize, t.blocksize());
            assertEquals(dq, t.doubleQuant());
            assertEquals(switch (dtype) {
                case "float16" -> DType.F16;
                case "bfloat16" -> DType.BF16;
                default -> DType.F32;
            }, t.dtype());
            assertEquals(storage, t.storedDtype());
            List<String> comps = new ArrayList<>(List.of(W, W + ".absmax", W + ".quant_map"));
            if (dq) {
                comps.addAll(List.of(W + ".nested_absmax", W + ".nested_quant_map"));
            }
            comps.add(W + ".quant_state.bitsandbytes__" + quantType);
            assertEquals(comps, t.components());
            // the bias next to a 4-bit weight stays a plain tensor of its own
            TensorInfo bi = c.tensor("model.layers.0.mlp.down_proj.bias");
            assertEquals(QuantKind.PLAIN, bi.kind());
            assertArrayEquals(bias, c.readFloats(bi.name()));
            assertEquals(2, c.tensors().size());

            assertBits(want, 0, c.readFloats(W), W);
            assertRoundedReads(c, W, want);
            assertRanges(c, W, want, blocksize);
        }
        assertTrue(relativeError(x, want) < 0.3, "the test quantizer is not bnb-like: error " + relativeError(x, want));
    }

    /** A non-nested absmax stored as F16 or BF16 is upcast exactly (bitsandbytes' CPU path does absmax.float()). */
    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F16", "BF16"})
    void halfPrecisionAbsmaxIsUpcastExactly(DType absmaxDtype) {
        long[] shape = {21, 70};
        BnbQuantizer.Quantized q = BnbQuantizer.quantize(BnbQuantizer.weights(shape, 77), shape, "nf4", 64, false);
        float[] rounded = new float[q.blocks()];
        ByteBuffer bytes = ByteBuffer.allocate(2 * rounded.length)
                .order(ByteOrder.LITTLE_ENDIAN);
        for (int j = 0; j < rounded.length; j++) {
            short h = absmaxDtype == DType.F16 ? Float.floatToFloat16(q.absmax()[j]) : BnbQuantizer.bf16(q.absmax()[j]);
            bytes.putShort(h);
            rounded[j] = absmaxDtype == DType.F16 ? Float.float16ToFloat(h) : Float.intBitsToFloat(h << 16);
        }
        BnbQuantizer.Quantized stored = new BnbQuantizer.Quantized("nf4", 64, shape, q.n(), q.packed(), rounded, null,
                null, 0f);
        CheckpointBuilder b = q.addTo(new CheckpointBuilder(), W, DType.U8, "float16", true)
                .put(W + ".absmax", absmaxDtype, new long[] {rounded.length}, bytes.array());
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("half")))) {
            assertBits(stored.expected(), 0, c.readFloats(W), W);
            assertRanges(c, W, stored.expected(), 64);
        }
    }

    /** LLM.int8 weights of any shape: {@code f32(f32(q * SCB[row]) * f32(1/127))}, rows crossed by ranges. */
    @Test
    void int8AnyShape() {
        long[] shape = {37, 129};
        Random r = new Random(5);
        byte[] q = new byte[37 * 129];
        r.nextBytes(q);
        q[0] = -128;
        q[1] = 127;
        float[] scb = new float[37];
        for (int i = 0; i < scb.length; i++) {
            scb[i] = (float) (0.01 + r.nextDouble() * 0.2);
        }
        scb[3] = 0f;
        CheckpointBuilder b = new CheckpointBuilder()
                .put("lin.weight", DType.I8, shape, q)
                .putFloats("lin.SCB", new long[] {37}, scb)
                .put("lin.weight_format", DType.U8, new long[0], new byte[] {0});
        Path dir = b.write(tmp.resolve("int8"));
        float inv127 = (float) (1.0 / 127);
        float[] want = new float[q.length];
        for (int k = 0; k < q.length; k++) {
            float t = (float) ((double) q[k] * (double) scb[k / 129]);
            want[k] = (float) ((double) t * (double) inv127);
        }
        try (Checkpoint c = Checkpoint.open(dir)) {
            TensorInfo t = c.tensor("lin.weight");
            assertEquals(QuantKind.INT8, t.kind());
            assertEquals(DType.F32, t.dtype());
            assertArrayEquals(shape, t.shape());
            assertEquals(List.of("lin.weight", "lin.SCB", "lin.weight_format"), t.components());
            assertEquals(1, c.tensors().size());
            assertBits(want, 0, c.readFloats("lin.weight"), "lin.weight");
            assertRoundedReads(c, "lin.weight", want);
            assertRanges(c, "lin.weight", want, 129);
        }
    }

    static void assertBits(float[] want, int from, float[] got, String what) {
        for (int i = 0; i < got.length; i++) {
            if (Float.floatToRawIntBits(want[from + i]) != Float.floatToRawIntBits(got[i])) {
                throw new AssertionError(what + "[" + (from + i) + "]: expected " + want[from + i] + " ("
                        + Integer.toHexString(Float.floatToRawIntBits(want[from + i])) + ") got " + got[i] + " ("
                        + Integer.toHexString(Float.floatToRawIntBits(got[i])) + ")");
            }
        }
    }

    /** F16 and BF16 reads are the float32 value rounded once to nearest even. */
    static void assertRoundedReads(Checkpoint c, String name, float[] want) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment f16 = arena.allocate(want.length * 2L);
            MemorySegment bf16 = arena.allocate(want.length * 2L);
            MemorySegment f32 = arena.allocate(want.length * 4L);
            c.read(name, DType.F16, f16);
            c.read(name, DType.BF16, bf16);
            c.readFloats(name, f32);
            for (int i = 0; i < want.length; i++) {
                if (Float.floatToFloat16(want[i]) != f16.getAtIndex(ValueLayout.JAVA_SHORT, i)
                        || BnbQuantizer.bf16(want[i]) != bf16.getAtIndex(ValueLayout.JAVA_SHORT, i)
                        || Float.floatToRawIntBits(want[i]) != f32.getAtIndex(ValueLayout.JAVA_INT, i)) {
                    throw new AssertionError(name + "[" + i + "] " + want[i] + ": f16 "
                            + Integer.toHexString(f16.getAtIndex(ValueLayout.JAVA_SHORT, i) & 0xFFFF) + " bf16 "
                            + Integer.toHexString(bf16.getAtIndex(ValueLayout.JAVA_SHORT, i) & 0xFFFF));
                }
            }
        }
    }

    /** Ranges starting on odd and even elements, inside one block, across blocks, at the very end. */
    static void assertRanges(Checkpoint c, String name, float[] want, int blocksize) {
        int n = want.length;
        List<int[]> ranges = new ArrayList<>(List.of(new int[] {0, 1}, new int[] {n - 1, 1}, new int[] {0, n},
                new int[] {1, n - 1}, new int[] {n, 0}));
        if (n >= 2) {
            // a tensor of one element has no second element, nor a pair ending at its last
            ranges.add(new int[] {1, 1});
            ranges.add(new int[] {n - 2, 2});
        }
        if (n > blocksize + 1) {
            ranges.add(new int[] {blocksize - 1, 2});
            ranges.add(new int[] {blocksize - 3, Math.min(n - blocksize + 3, 2 * blocksize + 5)});
        }
        Random r = new Random(n);
        for (int i = 0; i < 40; i++) {
            int start = r.nextInt(n);
            ranges.add(new int[] {start, r.nextInt(Math.min(n - start, 3 * blocksize) + 1)});
        }
        for (int[] range : ranges) {
            float[] dst = new float[range[1] + 3];
            dst[0] = dst[dst.length - 1] = 42f;
            c.readFloats(name, range[0], dst, 1, range[1]);
            assertEquals(42f, dst[0], "write before the range");
            assertEquals(42f, dst[dst.length - 1], "write after the range");
            float[] got = Arrays.copyOfRange(dst, 1, 1 + range[1]);
            assertBits(want, range[0], got, name + " range " + range[0] + "+" + range[1]);
        }
    }

    private static double relativeError(float[] x, float[] y) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < x.length; i++) {
            num += (x[i] - y[i]) * (double) (x[i] - y[i]);
            den += x[i] * (double) x[i];
        }
        return Math.sqrt(num / den);
    }
}

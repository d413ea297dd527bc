package dev.dequant4j.internal.bnb;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Fixtures;
import java.util.Arrays;
import java.util.Random;

/**
 * A test-side bitsandbytes-style 4-bit quantizer (blockwise absmax over the flattened tensor, nearest code, high
 * nibble first, optional double quantization with offset = mean and 256-blocks), and an independent oracle for the
 * dequantized values. The code tables are the ones bitsandbytes itself stored in the fixtures, so nothing here comes
 * from the code under test.
 *
 * <p>The oracle computes every float32 operation as {@code (float) (double op double)}: a product of two floats is
 * exact in double, and a sum of two floats rounded to double and then to float equals the float32 sum (double has
 * more than 2 * 24 + 2 bits), so this is IEEE binary32 arithmetic without relying on the JVM's float ops.
 */
final class BnbQuantizer {
    static final float[] NF4 = fixtureFloats("llama-h64-nf4", "model.layers.0.self_attn.q_proj.weight.quant_map");
    static final float[] FP4 = fixtureFloats("llama-h64-fp4-dq", "model.layers.0.self_attn.q_proj.weight.quant_map");
    /** bitsandbytes' signed 8-bit dynamic map, as it stored it. */
    static final float[] DYNAMIC = fixtureFloats("llama-h64-nf4-dq",
            "model.layers.0.self_attn.q_proj.weight.nested_quant_map");

    private BnbQuantizer() {}

    private static float[] fixtureFloats(String checkpoint, String key) {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(checkpoint))) {
            return CheckpointBuilder.floats(c.readBytes(key));
        }
    }

    /** One quantized weight: what bitsandbytes stores for it. */
    record Quantized(String quantType, int blocksize, long[] shape, long n, byte[] packed, float[] absmax,
                     byte[] absmaxCodes, float[] nestedAbsmax, float offset) {
        boolean nested() {
            return absmaxCodes != null;
        }

        float[] code() {
            return quantType.equals("nf4") ? NF4 : FP4;
        }

        int blocks() {
            return absmax.length;
        }

        /** The float32 scale of block {@code j} as the dequantizer must compute it. */
        float scale(int j) {
            if (!nested()) {
                return absmax[j];
            }
            float t = (float) ((double) DYNAMIC[absmaxCodes[j] & 0xFF] * (double) nestedAbsmax[j / 256]);
            return (float) ((double) t + (double) offset);
        }

        int nibble(long k) {
            int b = packed[(int) (k / 2)] & 0xFF;
            return k % 2 == 0 ? b >> 4 : b & 0xF;
        }

        /** The expected float32 dequantization of every element. */
        float[] expected() {
            float[] scales = new float[blocks()];
            for (int j = 0; j < scales.length; j++) {
                scales[j] = scale(j);
            }
            float[] out = new float[(int) n];
            float[] code = code();
            for (int k = 0; k < n; k++) {
                out[k] = (float) ((double) code[nibble(k)] * (double) scales[k / blocksize]);
            }
            return out;
        }

        /** The packed quant state as {@code QuantState.as_dict(packed=True)} writes it. */
        String json(String dtype, boolean withShape) {
            StringBuilder sb = new StringBuilder("{\"quant_type\": \"").append(quantType).append("\", \"blocksize\": ")
                    .append(blocksize).append(", \"dtype\": \"").append(dtype).append("\", \"shape\": ");
            if (withShape) {
                sb.append('[');
                for (int i = 0; i < shape.length; i++) {
                    sb.append(i > 0 ? ", " : "").append(shape[i]);
                }
                sb.append(']');
            } else {
                sb.append("null");
            }
            if (nested()) {
                sb.append(", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ")
                        .append(Double.toString(offset));
            }
            return sb.append('}').toString();
        }

        /**
         * Puts the weight {@code name} ({@code P.weight}) and its components into {@code b} as bitsandbytes saves
         * them, the packed bytes in {@code storage} (U8, or F16/BF16/F32 holding the same bytes, shape
         * {@code [bytes / itemsize, 1]}).
         */
        CheckpointBuilder addTo(CheckpointBuilder b, String name, DType storage, String dtype, boolean withShape) {
            int item = storage.bits() / 8;
            if (packed.length % item != 0) {
                throw new IllegalArgumentException("test setup: " + packed.length + " bytes are not whole " + storage);
            }
            b.put(name, storage, new long[] {packed.length / item, 1}, packed);
            if (nested()) {
                b.put(name + ".absmax", DType.U8, new long[] {absmaxCodes.length}, absmaxCodes);
            } else {
                b.putFloats(name + ".absmax", new long[] {absmax.length}, absmax);
            }
            b.putFloats(name + ".quant_map", new long[] {16}, code());
            if (nested()) {
                b.putFloats(name + ".nested_absmax", new long[] {nestedAbsmax.length}, nestedAbsmax);
                b.putFloats(name + ".nested_quant_map", new long[] {256}, DYNAMIC);
            }
            return b.putString(name + ".quant_state.bitsandbytes__" + quantType, json(dtype, withShape));
        }
    }

    static Quantized quantize(float[] x, long[] shape, String quantType, int blocksize, boolean doubleQuant) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        if (n != x.length) {
            throw new IllegalArgumentException("test setup: shape does not match values");
        }
        int nb = (int) ((n + blocksize - 1) / blocksize);
        float[] absmax = new float[nb];
        for (int k = 0; k < n; k++) {
            absmax[k / blocksize] = Math.max(absmax[k / blocksize], Math.abs(x[k]));
        }
        byte[] packed = new byte[(int) ((n + 1) / 2)];
        boolean nf4 = quantType.equals("nf4");
        for (int k = 0; k < n; k++) {
            float a = absmax[k / blocksize];
            float v = a == 0 ? 0 : x[k] / a;
            int q = nf4 ? nearest(NF4, 0, 16, v) : fp4(v);
            packed[k / 2] |= (byte) (k % 2 == 0 ? q << 4 : q);
        }
        if (n % 2 == 1) {
            // bitsandbytes pads with the code of 0.0
            packed[packed.length - 1] |= (byte) (nf4 ? 7 : 0);
        }
        if (!doubleQuant) {
            return new Quantized(quantType, blocksize, shape.clone(), n, packed, absmax, null, null, 0f);
        }
        double sum = 0;
        for (float a : absmax) {
            sum += a;
        }
        float offset = (float) (sum / nb);
        int nnb = (nb + 255) / 256;
        float[] centred = new float[nb];
        float[] nestedAbsmax = new float[nnb];
        for (int j = 0; j < nb; j++) {
            centred[j] = absmax[j] - offset;
            nestedAbsmax[j / 256] = Math.max(nestedAbsmax[j / 256], Math.abs(centred[j]));
        }
        byte[] codes = new byte[nb];
        for (int j = 0; j < nb; j++) {
            float a = nestedAbsmax[j / 256];
            codes[j] = (byte) nearest(DYNAMIC, 0, 256, a == 0 ? 0 : centred[j] / a);
        }
        return new Quantized(quantType, blocksize, shape.clone(), n, packed, absmax, codes, nestedAbsmax, offset);
    }

    /** FP4 as bitsandbytes quantizes it: the sign bit from the value (so -0.0 codes as 8), then the magnitude. */
    private static int fp4(float v) {
        int sign = v < 0 ? 8 : 0;
        return sign | nearest(FP4, 0, 8, Math.abs(v));
    }

    private static int nearest(float[] code, int from, int to, float v) {
        int best = from;
        for (int i = from + 1; i < to; i++) {
            if (Math.abs(code[i] - v) < Math.abs(code[best] - v)) {
                best = i;
            }
        }
        return best;
    }

    /** Weight-like values: N(0, 0.02^2) with a per-row factor, a few outliers, and one all-zero stretch. */
    static float[] weights(long[] shape, long seed) {
        Random r = new Random(seed);
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        long cols = shape.length > 1 ? shape[shape.length - 1] : n;
        float[] x = new float[(int) n];
        double factor = 1;
        for (int k = 0; k < n; k++) {
            if (k % cols == 0) {
                factor = 0.5 + r.nextDouble();
            }
            x[k] = (float) (r.nextGaussian() * 0.02 * factor);
        }
        for (int i = 0; i < Math.max(1, n / 2000); i++) {
            x[r.nextInt((int) n)] = (float) ((0.06 + 0.1 * r.nextDouble()) * (r.nextBoolean() ? 1 : -1));
        }
        int zeros = (int) Math.min(n / 3, 300);
        int at = r.nextInt((int) (n - zeros) + 1);
        Arrays.fill(x, at, at + zeros, 0f);
        return x;
    }

    /** bfloat16 bits of {@code f}, round to nearest even, by comparing the two neighbours (finite values only). */
    static short bf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        int down = bits & 0xFFFF0000;
        int up = down + 0x10000;
        double dDown = Math.abs((double) f - Float.intBitsToFloat(down));
        double dUp = Math.abs((double) Float.intBitsToFloat(up) - f);
        int pick;
        if (dDown < dUp) {
            pick = down;
        } else if (dUp < dDown) {
            pick = up;
        } else {
            pick = ((down >>> 16) & 1) == 0 ? down : up;
        }
        return (short) (pick >>> 16);
    }
}

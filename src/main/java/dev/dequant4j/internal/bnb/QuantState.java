package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonException;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.charset.StandardCharsets;
import java.util.Set;

/**
 * The non-tensor fields of a bitsandbytes 4-bit {@code QuantState}, as {@code QuantState.as_dict(packed=True)}
 * packs them into {@code <weight>.quant_state.bitsandbytes__nf4|fp4}: {@code quant_type}, {@code blocksize},
 * {@code dtype}, {@code shape}, and with double quantization {@code nested_blocksize}, {@code nested_dtype},
 * {@code nested_offset}.
 *
 * @param shape the logical weight shape, or null for bitsandbytes 0.41.2 files that wrote {@code "shape": null}
 */
public record QuantState(String quantType, int blocksize, DType dtype, long[] shape, boolean nested,
                         int nestedBlocksize, float nestedOffset) {
    private static final Set<String> KEYS = Set.of("quant_type", "blocksize", "dtype", "shape", "nested_blocksize",
            "nested_dtype", "nested_offset");
    /** bitsandbytes' {@code quantize_4bit}/{@code dequantize_4bit} accept these blocksizes. */
    public static final Set<Integer> BLOCKSIZES = Set.of(32, 64, 128, 256, 512, 1024, 2048, 4096);
    /** {@code quantize_4bit} always quantizes the absmax with blocksize 256. */
    public static final int NESTED_BLOCKSIZE = 256;

    /** Parses the packed JSON; errors are {@link JsonException}s whose message says which field is wrong. */
    public static QuantState parse(byte[] utf8) {
        JsonObject o;
        try {
            o = Json.parseObject(utf8);
        } catch (JsonException e) {
            throw new JsonException("quant state is not valid JSON: " + e.getMessage());
        }
        for (String k : o.keys()) {
            if (!KEYS.contains(k)) {
                throw new JsonException("quant state has unknown field '" + k + "'");
            }
        }
        String quantType = o.getString("quant_type");
        if (!quantType.equals("nf4") && !quantType.equals("fp4")) {
            throw new JsonException("quant_type '" + quantType + "' is not nf4 or fp4");
        }
        long bs = o.getLong("blocksize");
        if (!BLOCKSIZES.contains((int) bs) || bs != (int) bs) {
            throw new JsonException("blocksize " + bs + " is not one bitsandbytes allows (32, 64, ..., 4096)");
        }
        String dtypeName = o.getString("dtype");
        DType dtype = DType.fromTorchName(dtypeName).filter(DType::isOutputType)
                .orElseThrow(() -> new JsonException("dtype '" + dtypeName + "' is not float16, bfloat16 or float32"));
        long[] shape = null;
        // bitsandbytes' from_dict requires the key; only an explicit null is the 0.41.2 legacy form.
        JsonValue s = o.require("shape");
        if (s != JsonNull.NULL) {
            if (!(s instanceof JsonArray a)) {
                throw new JsonException("shape must be an array of integers or null");
            }
            if (a.size() > 64) {
                throw new JsonException("shape has more than 64 dimensions");
            }
            shape = new long[a.size()];
            long numel = 1;
            for (int i = 0; i < a.size(); i++) {
                if (!(a.get(i) instanceof JsonNumber n) || !n.isLong() || n.longValue() < 0) {
                    throw new JsonException("shape must hold non-negative integers");
                }
                shape[i] = n.longValue();
                try {
                    numel = Math.multiplyExact(numel, shape[i]);
                } catch (ArithmeticException e) {
                    throw new JsonException("shape has more elements than fit in 64 bits");
                }
            }
        }
        boolean nested = o.has("nested_blocksize") || o.has("nested_dtype") || o.has("nested_offset");
        int nestedBlocksize = 0;
        float offset = 0f;
        if (nested) {
            long nbs = o.getLong("nested_blocksize");
            if (nbs != NESTED_BLOCKSIZE) {
                throw new JsonException("nested_blocksize " + nbs + " is not 256 (bitsandbytes always uses 256)");
            }
            nestedBlocksize = NESTED_BLOCKSIZE;
            String nd = o.getString("nested_dtype");
            if (!DType.fromTorchName(nd).map(d -> d == DType.F32).orElse(false)) {
                throw new JsonException("nested_dtype '" + nd + "' is not float32" + (nd.endsWith("bfloat16")
                        ? " (bitsandbytes writes this when the model is saved after a forward pass on the CPU, whose"
                        + " kernel repacks the weight and re-quantizes its scales from bfloat16; save the quantized"
                        + " model before running it, or quantize it again from the 16-bit original)" : ""));
            }
            double off = o.getDouble("nested_offset");
            // Python wrote offset.item() of a float32 as a double; narrowing it back is exact.
            offset = (float) off;
            if (!Float.isFinite(offset)) {
                throw new JsonException("nested_offset " + off + " is not a finite float32");
            }
        }
        return new QuantState(quantType, (int) bs, dtype, shape, nested, nestedBlocksize, offset);
    }

    public static QuantState parse(String json) {
        return parse(json.getBytes(StandardCharsets.UTF_8));
    }

    @Override
    public long[] shape() {
        return shape == null ? null : shape.clone();
    }

    /** log2(blocksize). */
    public int blockShift() {
        return Integer.numberOfTrailingZeros(blocksize);
    }

    /** The built-in code table for this quant type (bitsandbytes ignores the stored quant_map too). */
    public float[] code() {
        return quantType.equals("nf4") ? Nf4.code() : Fp4.code();
    }
}

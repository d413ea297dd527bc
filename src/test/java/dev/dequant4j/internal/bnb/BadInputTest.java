package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.QuantKind;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Broken bitsandbytes checkpoints, each a fixture altered in one way: opening fails with one line naming the file
 * and the tensor, and saying what is wrong.
 */
class BadInputTest {
    /** A double-quantized NF4 weight of [64, 64]: 2048 packed bytes, 64 blocks, one nested block. */
    private static final String P = "model.layers.0.self_attn.q_proj.weight";
    private static final String QS = P + ".quant_state.bitsandbytes__nf4";
    private static final String I8 = "model.layers.0.self_attn.k_proj";

    @TempDir
    Path tmp;

    private int dirs;

    private static CheckpointBuilder nf4dq() {
        return CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-nf4-dq"));
    }

    private static CheckpointBuilder int8() {
        return CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-int8"));
    }

    /** Writes {@code b} as one file, opens it, and checks the error is exactly the one expected. */
    private void assertError(CheckpointBuilder b, String tensor, String detail) {
        Path dir = b.write(tmp.resolve("c" + dirs++));
        assertError(dir, dir.resolve("model.safetensors"), tensor, detail);
    }

    private static void assertError(Path dir, Path file, String tensor, String detail) {
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> Checkpoint.open(dir).close());
        assertEquals(file + ": tensor '" + tensor + "': " + detail, e.getMessage());
        assertEquals(Optional.of(file), e.file());
        assertEquals(Optional.of(tensor), e.tensor());
        assertFalse(e.getMessage().contains("\n"));
    }

    private static String qs(CheckpointBuilder b) {
        return b.string(QS);
    }

    // ---- missing components

    @ParameterizedTest
    @ValueSource(strings = {".absmax", ".quant_map", ".nested_absmax"})
    void missingComponent(String suffix) {
        assertError(nf4dq().remove(P + suffix), P, "missing bitsandbytes component " + P + suffix);
    }

    @Test
    void missingComponentOfASplitWeightSaysItIsNotInTheIndex() {
        String q1 = "model.layers.1.self_attn.q_proj.weight";
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-mixed")).remove(q1 + ".absmax");
        Path dir = b.writeSplitAfter(tmp.resolve("split"), q1);
        assertError(dir, dir.resolve("model-00001-of-00002.safetensors"), q1,
                "missing bitsandbytes component " + q1 + ".absmax (not in model.safetensors.index.json)");
    }

    @Test
    void quantStateWhoseWeightIsMissing() {
        assertError(nf4dq().remove(P), P, "has a quant state (" + QS + ") but the packed weight " + P
                + " is missing");
    }

    @Test
    void orphanAbsmaxWithoutQuantState() {
        CheckpointBuilder b = nf4dq().putFloats("model.layers.0.mlp.extra.weight.absmax", new long[] {4},
                new float[4]);
        assertError(b, "model.layers.0.mlp.extra.weight", "has bitsandbytes component "
                + "model.layers.0.mlp.extra.weight.absmax but no quant state "
                + "model.layers.0.mlp.extra.weight.quant_state.bitsandbytes__nf4|fp4");
    }

    @Test
    void componentsLeftWhenTheQuantStateIsGone() {
        // the first orphan in the file (the F32 nested_absmax: the safetensors writer put F32 before U8) is named
        assertError(nf4dq().remove(QS), P, "has bitsandbytes component " + P + ".nested_absmax but no quant state "
                + P + ".quant_state.bitsandbytes__nf4|fp4");
    }

    @Test
    void quantStateOfAnUnknownType() {
        CheckpointBuilder b = nf4dq().rename(QS, P + ".quant_state.bitsandbytes__int4");
        assertError(b, P, "quant state " + P + ".quant_state.bitsandbytes__int4 has the unknown quant type 'int4' "
                + "(bitsandbytes 4-bit types are nf4 and fp4)");
    }

    @Test
    void quantStatesForBothTypes() {
        CheckpointBuilder b = nf4dq();
        b.putString(P + ".quant_state.bitsandbytes__fp4", qs(b).replace("\"nf4\"", "\"fp4\""));
        assertError(b, P, "has quant states for both nf4 and fp4");
    }

    // ---- components of the wrong dtype or size

    @Test
    void absmaxOfWrongDtype() {
        CheckpointBuilder b = nf4dq().putFloats(P + ".absmax", new long[] {64}, new float[64]);
        assertError(b, P, "absmax of a double-quantized weight must be U8 codes, not F32");
    }

    @Test
    void absmaxOfWrongLength() {
        CheckpointBuilder b = nf4dq().put(P + ".absmax", DType.U8, new long[] {63}, new byte[63]);
        assertError(b, P, "absmax has 63 entries but 4096 elements in blocks of 64 need 64");
    }

    /** Only bitsandbytes' CPU repacking, [in/blocksize, out] = [1, 64] here, has a 2-D absmax that can be read. */
    @Test
    void plainAbsmaxInAnotherTwoDimensionalLayout() {
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-nf4"))
                .putFloats(P + ".absmax", new long[] {8, 8}, new float[64]);
        assertError(b, P, "absmax has shape [8, 8]; bitsandbytes saves it 1-D, one scale per block (only its CPU"
                + " repacking's [in/blocksize, out] = [1, 64] of a non-double-quantized weight can be read back)");
    }

    @Test
    void doubleQuantAbsmaxInTwoDimensions() {
        CheckpointBuilder b = nf4dq().put(P + ".absmax", DType.U8, new long[] {8, 8}, new byte[64]);
        assertError(b, P, "absmax has shape [8, 8]; bitsandbytes saves it 1-D, one scale per block (only its CPU"
                + " repacking's [in/blocksize, out] = [1, 64] of a non-double-quantized weight can be read back)");
    }

    @Test
    void plainAbsmaxOfWrongLength() {
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-nf4"))
                .putFloats(P + ".absmax", new long[] {65}, new float[65]);
        assertError(b, P, "absmax has 65 entries but 4096 elements in blocks of 64 need 64");
    }

    @Test
    void u8AbsmaxWithoutNestedFields() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replaceAll(", \"nested_blocksize\".*}", "}"));
        b.remove(P + ".nested_absmax").remove(P + ".nested_quant_map");
        assertError(b, P, "absmax must be F32, not U8 (U8 codes need nested_* fields in the quant state)");
    }

    @Test
    void nestedComponentWithoutNestedFields() {
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-nf4"))
                .putFloats(P + ".nested_absmax", new long[] {1}, new float[] {1});
        assertError(b, P, "has " + P + ".nested_absmax but its quant state has no nested_* fields");
    }

    @Test
    void quantMapOfWrongDtypeOrSize() {
        assertError(nf4dq().put(P + ".quant_map", DType.F16, new long[] {16}, new byte[32]), P,
                P + ".quant_map must be F32 with 16 entries, not F16[16]");
        assertError(nf4dq().putFloats(P + ".quant_map", new long[] {15}, new float[15]), P,
                P + ".quant_map must be F32 with 16 entries, not F32[15]");
    }

    @Test
    void nestedAbsmaxOfWrongDtypeOrSize() {
        assertError(nf4dq().putFloats(P + ".nested_absmax", new long[] {2}, new float[2]), P,
                "nested_absmax must be F32 with 1 entries (64 blocks / 256), not F32[2]");
        assertError(nf4dq().put(P + ".nested_absmax", DType.F16, new long[] {1}, new byte[2]), P,
                "nested_absmax must be F32 with 1 entries (64 blocks / 256), not F16[1]");
    }

    @Test
    void nestedQuantMapOfWrongSize() {
        assertError(nf4dq().putFloats(P + ".nested_quant_map", new long[] {255}, new float[255]), P,
                P + ".nested_quant_map must be F32 with 256 entries, not F32[255]");
    }

    @Test
    void packedWeightOfWrongSize() {
        assertError(nf4dq().put(P, DType.U8, new long[] {2047, 1}, new byte[2047]), P,
                "packed 4-bit weight holds 2047 bytes but [64, 64] (4096 elements) needs 2048");
    }

    @Test
    void packedWeightTransposed() {
        assertError(nf4dq().put(P, DType.U8, new long[] {1, 2048}, new byte[2048]), P,
                "packed 4-bit weight has shape [1, 2048]; bitsandbytes saves [n/2, 1] (a transposed [1, n/2] layout "
                        + "is not supported)");
    }

    @Test
    void packedWeightOfANonStorageDtype() {
        assertError(nf4dq().put(P, DType.I32, new long[] {512, 1}, new byte[2048]), P,
                "packed 4-bit weight has dtype I32 (quant_storage must be uint8, int8, float16, bfloat16, float32 or "
                        + "float64)");
    }

    @Test
    void quantStateTensorNotU8() {
        CheckpointBuilder b = nf4dq();
        byte[] json = b.get(QS).data();
        b.put(QS, DType.I8, new long[] {json.length}, json);
        assertError(b, P, "quant state " + QS + " must be a 1-D U8 tensor, not I8[" + json.length + "]");
    }

    @Test
    void quantStateTooLarge() {
        byte[] big = new byte[(1 << 20) + 1];
        Arrays.fill(big, (byte) ' ');
        big[0] = '{';
        big[big.length - 1] = '}';
        assertError(nf4dq().put(QS, DType.U8, new long[] {big.length}, big), P,
                "quant state " + QS + " is 1048577 bytes; a real one is a few hundred");
    }

    // ---- the quant state JSON

    @Test
    void malformedQuantStateJson() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).substring(0, 40));
        assertError(b, P, "bad quant state: quant state is not valid JSON: unterminated string at byte 39");
        assertError(nf4dq().putString(QS, "[1, 2]"), P,
                "bad quant state: quant state is not valid JSON: expected a JSON object at byte 0");
        assertError(nf4dq().putString(QS, ""), P,
                "bad quant state: quant state is not valid JSON: empty JSON document at byte 0");
        assertError(nf4dq().put(QS, DType.U8, new long[] {2}, new byte[] {(byte) 0xC3, (byte) 0x28}), P,
                "bad quant state: quant state is not valid JSON: unexpected character 0xc3, expected a value at byte 0");
    }

    @ParameterizedTest
    @ValueSource(strings = {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype",
        "nested_offset"})
    void quantStateLackingAField(String field) {
        CheckpointBuilder b = nf4dq();
        String json = qs(b).replaceAll("\"" + field + "\": (\"[^\"]*\"|\\[[^]]*]|[^,}]*)(, )?", "");
        if (json.endsWith(", }")) {
            json = json.substring(0, json.length() - 3) + "}";
        }
        assertFalse(json.contains("\"" + field + "\""), json);
        b.putString(QS, json);
        assertError(b, P, "bad quant state: missing field '" + field + "'");
    }

    @ParameterizedTest
    @ValueSource(ints = {0, 16, 48, 63, 8192, -64})
    void blocksizeNotAllowed(int blocksize) {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"blocksize\": 64", "\"blocksize\": " + blocksize));
        assertError(b, P, "bad quant state: blocksize " + blocksize
                + " is not one bitsandbytes allows (32, 64, ..., 4096)");
    }

    @Test
    void blocksizeOutOfIntRangeIsNotTruncated() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"blocksize\": 64", "\"blocksize\": 4294967360"));
        assertError(b, P, "bad quant state: blocksize 4294967360 is not one bitsandbytes allows (32, 64, ..., 4096)");
    }

    @Test
    void quantTypeOfKeyAndJsonDisagree() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"nf4\"", "\"fp4\""));
        assertError(b, P, "quant state says quant_type fp4 but its key says nf4");
    }

    @Test
    void quantTypeUnknown() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"nf4\"", "\"int4\""));
        assertError(b, P, "bad quant state: quant_type 'int4' is not nf4 or fp4");
    }

    @Test
    void unknownField() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("{", "{\"quant_storage\": \"uint8\", "));
        assertError(b, P, "bad quant state: quant state has unknown field 'quant_storage'");
    }

    @Test
    void dtypeNotAFloatType() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"bfloat16\"", "\"int8\""));
        assertError(b, P, "bad quant state: dtype 'int8' is not float16, bfloat16 or float32");
    }

    @Test
    void nestedBlocksizeNot256() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"nested_blocksize\": 256", "\"nested_blocksize\": 64"));
        assertError(b, P, "bad quant state: nested_blocksize 64 is not 256 (bitsandbytes always uses 256)");
    }

    @Test
    void nestedDtypeNotFloat32() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("\"nested_dtype\": \"float32\"", "\"nested_dtype\": \"float16\""));
        assertError(b, P, "bad quant state: nested_dtype 'float16' is not float32");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {"1e999|Infinity", "-1e999|-Infinity", "1e39|1.0E39"})
    void nestedOffsetNotAFiniteFloat32(String text, String shown) {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replaceAll("\"nested_offset\": [^}]*}", "\"nested_offset\": " + text + "}"));
        assertError(b, P, "bad quant state: nested_offset " + shown + " is not a finite float32");
    }

    @Test
    void shapeNotNonNegativeIntegers() {
        CheckpointBuilder b = nf4dq();
        b.putString(QS, qs(b).replace("[64, 64]", "[64, -64]"));
        assertError(b, P, "bad quant state: shape must hold non-negative integers");
        CheckpointBuilder c = nf4dq();
        c.putString(QS, qs(c).replace("[64, 64]", "\"64x64\""));
        assertError(c, P, "bad quant state: shape must be an array of integers or null");
    }

    // ---- LLM.int8

    @Test
    void int8WeightWithoutScbInAnEightBitModel() {
        CheckpointBuilder b = int8().remove(I8 + ".SCB").remove(I8 + ".weight_format");
        assertError(b, I8 + ".weight", "is an int8 weight of a bitsandbytes 8-bit model but " + I8
                + ".SCB is missing");
    }

    /** Without an 8-bit config an I8 tensor is just an I8 tensor: the keys decide, not the config. */
    @Test
    void int8WeightWithoutScbAndWithoutConfigIsPlain() {
        CheckpointBuilder b = int8().remove(I8 + ".SCB").remove(I8 + ".weight_format").config(null);
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("plain")))) {
            assertEquals(QuantKind.PLAIN, c.tensor(I8 + ".weight").kind());
            assertEquals(DType.I8, c.tensor(I8 + ".weight").dtype());
            assertFalse(c.tensor(I8 + ".weight").isFloat());
        }
    }

    @Test
    void int8WeightWithAMalformedQuantizationConfigIsPlain() {
        CheckpointBuilder b = int8().remove(I8 + ".SCB").remove(I8 + ".weight_format");
        b.config(b.config().replace("\"load_in_8bit\": true", "\"load_in_8bit\": \"yes\""));
        try (Checkpoint c = Checkpoint.open(b.write(tmp.resolve("cfg")))) {
            assertEquals(QuantKind.PLAIN, c.tensor(I8 + ".weight").kind());
        }
    }

    @Test
    void weightFormatWithoutScb() {
        CheckpointBuilder b = int8().remove(I8 + ".SCB").config(null);
        assertError(b, I8 + ".weight", "has " + I8 + ".weight_format but no " + I8
                + ".SCB: an int8 weight needs its row scales");
    }

    @Test
    void scbWithoutWeight() {
        assertError(int8().remove(I8 + ".weight"), I8 + ".weight", "has " + I8 + ".SCB but the int8 weight " + I8
                + ".weight is missing");
    }

    @Test
    void scbOfWrongDtypeOrLength() {
        assertError(int8().putFloats(I8 + ".SCB", new long[] {31}, new float[31]), I8 + ".weight",
                "SCB must be F32 [32] (one scale per row), not F32[31]");
        assertError(int8().put(I8 + ".SCB", DType.F16, new long[] {32}, new byte[64]), I8 + ".weight",
                "SCB must be F32 [32] (one scale per row), not F16[32]");
    }

    @Test
    void int8WeightNotI8() {
        assertError(int8().put(I8 + ".weight", DType.F16, new long[] {32, 64}, new byte[32 * 64 * 2]),
                I8 + ".weight", "int8 weight must be a 2-D I8 tensor, not F16[32, 64]");
    }

    @ParameterizedTest
    @CsvSource({"1, col32", "2, col_turing", "3, col_ampere", "9, unknown"})
    void weightFormatOtherThanRowIsRefusedWithTheReason(int code, String name) {
        CheckpointBuilder b = int8().put(I8 + ".weight_format", DType.U8, new long[0], new byte[] {(byte) code});
        assertError(b, I8 + ".weight", "weight_format " + code + " (" + name + ") is a GPU tile layout from "
                + "bitsandbytes 0.43-0.44 whose permutation is only defined by running its CUDA kernels; only the row "
                + "format (0) is supported: re-save the model with a current bitsandbytes");
    }

    @Test
    void weightFormatNotAScalar() {
        assertError(int8().put(I8 + ".weight_format", DType.U8, new long[] {2}, new byte[2]), I8 + ".weight",
                "weight_format must be a scalar, not [2]");
    }
}

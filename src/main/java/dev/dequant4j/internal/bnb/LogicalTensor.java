package dev.dequant4j.internal.bnb;

import dev.dequant4j.DType;
import dev.dequant4j.QuantKind;
import java.util.List;

/**
 * A tensor as the model sees it: a plain stored tensor, or a bitsandbytes weight made of several stored
 * components. Reading gives float32 values of the flattened tensor, dequantized where needed, in any range, so
 * large tensors can be processed in chunks.
 */
public sealed interface LogicalTensor permits PlainTensor, FourBitTensor, Int8Tensor {
    String name();

    QuantKind kind();

    /** The logical shape (for 4-bit weights, the quant state's shape, not the packed one). */
    long[] shape();

    long numel();

    /**
     * The dtype the values represent: the stored dtype of a plain tensor, the quant state's dtype of a 4-bit
     * weight, F32 for an int8 weight (bitsandbytes' {@code int8_vectorwise_dequant} returns float32).
     */
    DType dtype();

    /** The dtype of the stored main tensor (U8 for packed 4-bit with uint8 storage, I8 for int8). */
    DType storedDtype();

    /** Bytes of all stored components. */
    long storedBytes();

    /** The stored keys that make up this tensor, the main one first. */
    List<String> components();

    /** The 4-bit blocksize, or 0. */
    default int blocksize() {
        return 0;
    }

    default boolean doubleQuant() {
        return false;
    }

    /** True when {@link #readF32} can be used (quantized weights, and plain tensors of a float dtype). */
    boolean isFloat();

    /** Reads elements {@code [start, start + count)} of the flattened tensor as float32. */
    void readF32(long start, float[] dst, int dstOff, int count);
}

package dev.dequant4j;

import dev.dequant4j.internal.safetensors.TensorEntry;
import java.util.Arrays;
import java.util.List;

/**
 * A logical tensor of a checkpoint: a plain stored tensor, or a bitsandbytes weight assembled from its stored
 * components (which are not listed as tensors of their own).
 */
public final class TensorInfo {
    private final String name;
    private final QuantKind kind;
    private final long[] shape;
    private final DType dtype;
    private final DType storedDtype;
    private final long storedBytes;
    private final int blocksize;
    private final boolean doubleQuant;
    private final List<String> components;

    TensorInfo(String name, QuantKind kind, long[] shape, DType dtype, DType storedDtype, long storedBytes,
               int blocksize, boolean doubleQuant, List<String> components) {
        this.name = name;
        this.kind = kind;
        this.shape = shape.clone();
        this.dtype = dtype;
        this.storedDtype = storedDtype;
        this.storedBytes = storedBytes;
        this.blocksize = blocksize;
        this.doubleQuant = doubleQuant;
        this.components = List.copyOf(components);
    }

    /** {@return the logical name, without bitsandbytes' component suffixes} */
    public String name() {
        return name;
    }

    /** {@return how it is stored: PLAIN, NF4, FP4 or INT8} */
    public QuantKind kind() {
        return kind;
    }

    /** {@return true unless the kind is PLAIN} */
    public boolean isQuantized() {
        return kind != QuantKind.PLAIN;
    }

    /** {@return a copy of the logical shape, e.g. {@code [out_features, in_features]} for a quantized linear weight} */
    public long[] shape() {
        return shape.clone();
    }

    /** {@return the number of elements of the logical shape} */
    public long numel() {
        return TensorEntry.numel(shape);
    }

    /**
     * The dtype the values represent: the stored dtype of a plain tensor; for a 4-bit weight the quant state's
     * {@code dtype} (the weight's dtype before quantization, and bitsandbytes' dequantization output); F32 for an
     * int8 weight (the output of bitsandbytes' {@code int8_vectorwise_dequant}).
     *
     * @return the dtype a float read converts from
     */
    public DType dtype() {
        return dtype;
    }

    /** {@return the dtype of the stored main tensor: U8 (or the quant_storage dtype) for 4-bit, I8 for int8} */
    public DType storedDtype() {
        return storedDtype;
    }

    /** {@return the bytes of all stored components} */
    public long storedBytes() {
        return storedBytes;
    }

    /** {@return the 4-bit blocksize, 0 for other kinds} */
    public int blocksize() {
        return blocksize;
    }

    /** {@return true for a 4-bit weight whose absmax is itself quantized (bitsandbytes' double quantization)} */
    public boolean doubleQuant() {
        return doubleQuant;
    }

    /** {@return the stored keys that make up this tensor, the main one first} */
    public List<String> components() {
        return components;
    }

    /** {@return true when the tensor can be read as float32 (quantized weights and float plain tensors)} */
    public boolean isFloat() {
        return isQuantized() || dtype == DType.F32 || dtype == DType.F16 || dtype == DType.BF16 || dtype == DType.F64;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder(name).append(' ').append(kind).append(' ').append(dtype)
                .append(Arrays.toString(shape));
        if (blocksize > 0) {
            sb.append(" blocksize=").append(blocksize);
        }
        if (doubleQuant) {
            sb.append(" double-quant");
        }
        return sb.toString();
    }
}

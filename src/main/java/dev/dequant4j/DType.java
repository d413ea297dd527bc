package dev.dequant4j;

import java.util.Locale;
import java.util.Optional;

/**
 * Element types of the safetensors format, named as in its headers. Sizes are in bits because F4 and F6 are
 * sub-byte types.
 */
public enum DType {
    /** Boolean, one byte. */
    BOOL(8),
    /** 4-bit float (E2M1). */
    F4(4),
    /** 6-bit float, 2 exponent and 3 mantissa bits. */
    F6_E2M3(6),
    /** 6-bit float, 3 exponent and 2 mantissa bits. */
    F6_E3M2(6),
    /** Unsigned 8-bit integer. */
    U8(8),
    /** Signed 8-bit integer. */
    I8(8),
    /** 8-bit float, 5 exponent and 2 mantissa bits. */
    F8_E5M2(8),
    /** 8-bit float, 4 exponent and 3 mantissa bits. */
    F8_E4M3(8),
    /** 8-bit exponent-only scale (E8M0). */
    F8_E8M0(8),
    /** 8-bit float E4M3 without negative zero, NaN as 0x80. */
    F8_E4M3FNUZ(8),
    /** 8-bit float E5M2 without negative zero, NaN as 0x80. */
    F8_E5M2FNUZ(8),
    /** Signed 16-bit integer. */
    I16(16),
    /** Unsigned 16-bit integer. */
    U16(16),
    /** IEEE 754 half precision. */
    F16(16),
    /** bfloat16: float32's exponent, 7 mantissa bits. */
    BF16(16),
    /** Signed 32-bit integer. */
    I32(32),
    /** Unsigned 32-bit integer. */
    U32(32),
    /** IEEE 754 single precision. */
    F32(32),
    /** Complex of two float32. */
    C64(64),
    /** IEEE 754 double precision. */
    F64(64),
    /** Signed 64-bit integer. */
    I64(64),
    /** Unsigned 64-bit integer. */
    U64(64);

    private final int bits;

    DType(int bits) {
        this.bits = bits;
    }

    /** {@return the size of one element in bits} */
    public int bits() {
        return bits;
    }

    /** {@return the name used in safetensors headers, e.g. {@code "BF16"}} */
    public String safetensorsName() {
        return name();
    }

    /**
     * The dtype with this safetensors header name, if any.
     *
     * @param name a header's {@code dtype} value, e.g. {@code "F16"}
     * @return the dtype, or empty for a name safetensors does not define
     */
    public static Optional<DType> fromSafetensorsName(String name) {
        for (DType d : values()) {
            if (d.name().equals(name)) {
                return Optional.of(d);
            }
        }
        return Optional.empty();
    }

    /**
     * Bytes taken by {@code numel} elements.
     *
     * @param numel the number of elements
     * @return the bytes, or -1 if that is not a whole number of bytes, overflows, or {@code numel} is negative
     */
    public long byteSize(long numel) {
        if (numel < 0) {
            return -1;
        }
        if (bits % 8 == 0) {
            long bytesPer = bits / 8;
            return numel > Long.MAX_VALUE / bytesPer ? -1 : numel * bytesPer;
        }
        if (numel > Long.MAX_VALUE / bits) {
            return -1;
        }
        long totalBits = numel * bits;
        return totalBits % 8 == 0 ? totalBits / 8 : -1;
    }

    /** {@return true for the float types that dequantized output can be written in: F32, F16 and BF16} */
    public boolean isOutputType() {
        return this == F32 || this == F16 || this == BF16;
    }

    /** {@return PyTorch's name of this type ({@code "float16"}, {@code "bfloat16"}, {@code "float32"}, ...)} */
    public String torchName() {
        return switch (this) {
            case F16 -> "float16";
            case BF16 -> "bfloat16";
            case F32 -> "float32";
            case F64 -> "float64";
            case U8 -> "uint8";
            case I8 -> "int8";
            case I16 -> "int16";
            case I32 -> "int32";
            case I64 -> "int64";
            case BOOL -> "bool";
            default -> name().toLowerCase(Locale.ROOT);
        };
    }

    /**
     * The dtype for a PyTorch dtype name as found in config.json or a bitsandbytes quant state: {@code "float16"},
     * {@code "bfloat16"}, {@code "float32"} (also with a {@code "torch."} prefix, and the short forms {@code "fp16"},
     * {@code "bf16"}, {@code "f16"}, {@code "f32"}, {@code "half"}, {@code "float"}).
     *
     * @param name the PyTorch name, in any case
     * @return the dtype, or empty for a name not listed here
     */
    public static Optional<DType> fromTorchName(String name) {
        String n = name.toLowerCase(Locale.ROOT);
        if (n.startsWith("torch.")) {
            n = n.substring(6);
        }
        return Optional.ofNullable(switch (n) {
            case "float16", "fp16", "f16", "half" -> F16;
            case "bfloat16", "bf16" -> BF16;
            case "float32", "fp32", "f32", "float" -> F32;
            case "float64", "double" -> F64;
            case "uint8" -> U8;
            case "int8" -> I8;
            default -> null;
        });
    }
}

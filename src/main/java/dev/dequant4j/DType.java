package dev.dequant4j;

import java.util.Locale;
import java.util.Optional;

/**
 * Element types of the safetensors format, named as in its headers. Sizes are in bits because F4 and F6 are
 * sub-byte types.
 */
public enum DType {
    BOOL(8), F4(4), F6_E2M3(6), F6_E3M2(6), U8(8), I8(8), F8_E5M2(8), F8_E4M3(8), F8_E8M0(8), F8_E4M3FNUZ(8),
    F8_E5M2FNUZ(8), I16(16), U16(16), F16(16), BF16(16), I32(32), U32(32), F32(32), C64(64), F64(64), I64(64), U64(64);

    private final int bits;

    DType(int bits) {
        this.bits = bits;
    }

    /** Size of one element in bits. */
    public int bits() {
        return bits;
    }

    /** The name used in safetensors headers, e.g. {@code "BF16"}. */
    public String safetensorsName() {
        return name();
    }

    /** The dtype with this safetensors header name, if any. */
    public static Optional<DType> fromSafetensorsName(String name) {
        for (DType d : values()) {
            if (d.name().equals(name)) {
                return Optional.of(d);
            }
        }
        return Optional.empty();
    }

    /**
     * Bytes taken by {@code numel} elements, or -1 if that is not a whole number of bytes or overflows.
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

    /** True for the float types that dequantized output can be written in: F32, F16 and BF16. */
    public boolean isOutputType() {
        return this == F32 || this == F16 || this == BF16;
    }

    /** PyTorch's name ({@code "float16"}, {@code "bfloat16"}, {@code "float32"}) of an output type. */
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

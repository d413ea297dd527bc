package dev.dequant4j;

/** How a logical tensor is stored. */
public enum QuantKind {
    /** Stored as is (F32, F16, BF16, ...). */
    PLAIN,
    /** bitsandbytes 4-bit NormalFloat. */
    NF4,
    /** bitsandbytes 4-bit float (1 sign, 2 exponent, 1 mantissa bit). */
    FP4,
    /** bitsandbytes LLM.int8 (row-wise absmax int8). */
    INT8
}

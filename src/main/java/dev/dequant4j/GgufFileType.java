package dev.dequant4j;

/**
 * The tensor types of a GGUF export, as llama.cpp's {@code convert_hf_to_gguf.py --outtype} and
 * {@code llama-quantize} name them. Norms and other one-dimensional tensors stay F32 in every type, as the converter
 * keeps them.
 */
public enum GgufFileType {
    /** Every tensor F32 ({@code general.file_type} 0). */
    F32,
    /** Matrices F16, rounded once from the float32 merged weight, to nearest even ({@code general.file_type} 1). */
    F16,
    /** Matrices BF16, rounded once to nearest even ({@code general.file_type} 32). */
    BF16,
    /** Matrices Q8_0, quantized from the float32 merged weight ({@code general.file_type} 7). */
    Q8_0,
    /** llama-quantize's Q4_K_M mix; not supported yet. */
    Q4_K_M,
    /** llama-quantize's Q5_K_M mix; not supported yet. */
    Q5_K_M,
    /** llama-quantize's Q6_K; not supported yet. */
    Q6_K
}

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
    /**
     * llama-quantize's Q4_K_M mix (Q4_K, with Q6_K/Q5_0/Q8_0 where its rules say), as {@code llama-quantize} makes it
     * from the F32 file, without an importance matrix; quantized from the float32 merged weight
     * ({@code general.file_type} 15).
     */
    Q4_K_M,
    /** llama-quantize's Q5_K_M mix, likewise ({@code general.file_type} 17). */
    Q5_K_M,
    /** llama-quantize's Q6_K, likewise ({@code general.file_type} 18). */
    Q6_K
}

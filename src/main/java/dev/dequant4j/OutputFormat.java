package dev.dequant4j;

/** The file format an {@link Export} writes. */
public enum OutputFormat {
    /**
     * A Hugging Face model directory: {@code model.safetensors} (or shards and their index), config.json without
     * {@code quantization_config}, the tokenizer and generation files, the manifest.
     */
    SAFETENSORS,
    /**
     * A directory holding one {@code model.gguf} (llama.cpp's format, with the tokenizer inside) and the manifest;
     * the tensor types are chosen with {@link Export#ggufType}.
     */
    GGUF
}

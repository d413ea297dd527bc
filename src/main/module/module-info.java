/**
 * dequant4j: reads bitsandbytes-quantized checkpoints and PEFT LoRA adapters, dequantizes them bit-exactly,
 * merges adapters and writes plain FP16/BF16/F32 safetensors. The API is the one package {@link dev.dequant4j};
 * everything under {@code dev.dequant4j.internal} is encapsulated.
 *
 * <p>Optional modules, read when the application resolves them: {@code jdk.incubator.vector} for the Vector API
 * kernels ({@code --add-modules jdk.incubator.vector}); {@code org.bytedeco.cuda} (with JavaCPP) and the
 * {@code dev.dequant4j.linux.x86_64} natives for the CUDA backend.
 */
module dev.dequant4j {
    requires jdk.unsupported;
    requires static jdk.incubator.vector;
    requires static org.bytedeco.javacpp;
    requires static org.bytedeco.cuda;

    exports dev.dequant4j;
}

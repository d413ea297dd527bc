/**
 * Reads bitsandbytes-quantized checkpoints (NF4/FP4 4-bit, with or without double quantization, and LLM.int8) and
 * PEFT LoRA adapters, dequantizes them bit for bit as bitsandbytes does, merges adapters as PEFT does, and writes
 * plain FP16/BF16/F32 safetensors models that load without bitsandbytes.
 *
 * <h2>Exporting a model</h2>
 *
 * {@link dev.dequant4j.Checkpoint#open(java.nio.file.Path)} maps a model directory (or one {@code .safetensors}
 * file) and validates every header; {@link dev.dequant4j.LoraAdapter#open(java.nio.file.Path)} does the same for a
 * PEFT adapter directory. {@link dev.dequant4j.Export} describes an export and runs it:
 *
 * <pre>{@code
 * import dev.dequant4j.*;
 * import java.nio.file.Path;
 *
 * ProgressListener listener = new ProgressListener() {
 *     @Override
 *     public void onTensor(String name, int index, long bytesDone) {
 *         System.out.println(index + " " + name);
 *     }
 * };
 * try (Checkpoint base = Checkpoint.open(Path.of("llama-3-8b-bnb-4bit"));
 *      LoraAdapter lora = LoraAdapter.open(Path.of("my-finetune"))) {
 *     ExportResult r = Export.of(base)
 *             .adapter(lora)
 *             .dtype(DType.F16)
 *             .progress(listener)
 *             .to(Path.of("llama-3-8b-merged-f16"));
 *     System.out.println(r.tensors() + " tensors, " + r.bytes() + " bytes in " + r.files().size() + " files");
 * } catch (Dequant4jException e) {
 *     // One line naming the file and tensor; kind() says what failed.
 *     System.err.println(e.kind() + ": " + e.getMessage());
 * }
 * }</pre>
 *
 * The output directory appears complete or not at all, every input problem is found before the first byte is
 * written, and memory stays bounded by {@link dev.dequant4j.Export#memoryBudget(long)} whatever the model size.
 *
 * <h2>Reading tensors</h2>
 *
 * {@link dev.dequant4j.Checkpoint} lists the logical tensors ({@link dev.dequant4j.TensorInfo}: a bitsandbytes
 * weight is one tensor, its stored components are not listed on their own) and reads any float tensor as float32,
 * dequantized on the fly; {@link dev.dequant4j.MergedModel} reads them with the adapters merged, the values an export
 * writes. {@link dev.dequant4j.Checkpoint#storedTensors()} lists what the files hold, byte for byte.
 *
 * <h2>Failures, resources, threads</h2>
 *
 * Every failure of the library is a {@link dev.dequant4j.Dequant4jException} whose one-line message names the file
 * and tensor, also available as fields, and whose {@link dev.dequant4j.Dequant4jException#kind()} is one of a small
 * documented set. Every resource is {@link java.lang.AutoCloseable}; reads are thread-safe, and a read after
 * {@code close()} fails with an exception, never a crash.
 *
 * <h2>Runtime options</h2>
 *
 * The Vector API kernels run when the JVM resolves {@code jdk.incubator.vector}
 * ({@code --add-modules jdk.incubator.vector}); without it the scalar kernels give the same results, slower. The
 * library maps files with the foreign memory API: run it with {@code --enable-native-access=ALL-UNNAMED} (or the
 * module's name) to avoid the JVM's warning. The CUDA backend ({@link dev.dequant4j.Backend#CUDA}) needs the
 * {@code linux-x86_64} natives and the JavaCPP CUDA presets on the class or module path, a CUDA 13 runtime and an
 * NVIDIA GPU; {@link dev.dequant4j.Backend#describe()} says what is missing where it is not usable.
 */
package dev.dequant4j;

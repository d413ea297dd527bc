package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.ProgressListener;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ExportBehaviourTest {
    @TempDir
    Path tmp;

    private static final String VLM_CONFIG = """
            {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "torch_dtype": "bfloat16",
             "quantization_config": {"load_in_4bit": true, "quant_method": "bitsandbytes"},
             "text_config": {"model_type": "llama", "hidden_size": 64, "torch_dtype": "bfloat16",
                             "quantization_config": {"quant_method": "bitsandbytes"}},
             "vision_config": {"image_size": 336, "rope_theta": 1.0e4, "layer_norm_eps": 1e-05},
             "vocab_size": 32064}
            """;

    private List<Path> siblings() throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.sorted().toList();
        }
    }

    @Test
    void configLosesQuantizationConfigEverywhereAndKeepsEverythingElseInOrder() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 2, 8, 16, VLM_CONFIG);
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            Export.of(c).dtype(DType.F16).to(out);
        }
        JsonObject cfg = Json.readObject(out.resolve("config.json"), 1 << 20);
        assertEquals(List.of("architectures", "model_type", "torch_dtype", "text_config", "vision_config",
                "vocab_size"), List.copyOf(cfg.keys()));
        assertEquals("float16", cfg.getString("torch_dtype"));
        assertFalse(cfg.getObject("text_config").has("quantization_config"));
        assertEquals("float16", cfg.getObject("text_config").getString("torch_dtype"));
        assertEquals("1.0e4", cfg.getObject("vision_config").get("rope_theta").toString(), "number text kept");
        assertEquals("1e-05", cfg.getObject("vision_config").get("layer_norm_eps").toString());
        assertEquals("{{ messages }}\n", Files.readString(out.resolve("chat_template.jinja")));
        assertEquals("{\"model_max_length\": 128}\n", Files.readString(out.resolve("tokenizer_config.json")));
    }

    /** Tests run without a usable GPU (CI has none); where one is usable the GPU tests cover the CUDA path. */
    @Test
    void withoutAUsableGpuCudaIsRefusedUpFrontAndAutoFallsBackSayingWhy() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeFalse(Backend.CUDA.isAvailable(), "a usable GPU is present");
        String reason = Backend.CUDA.describe();
        assertFalse(reason.isBlank());
        assertTrue(Backend.AUTO.describe().startsWith("CPU (" + reason + "); "), Backend.AUTO.describe());
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).backend(Backend.CUDA).to(out));
            assertEquals("Backend.CUDA is not usable: " + reason, e.getMessage());
            assertEquals(Dequant4jException.Kind.BACKEND, e.kind());
            assertEquals(List.of(), siblings(), "refused before anything was written");
            ExportResult r = Export.of(c).backend(Backend.AUTO).to(out);
            assertEquals(Backend.CPU, r.backend());
            assertTrue(r.backendReason().startsWith("cpu (" + reason + "; "), r.backendReason());
        }
    }

    /**
     * GPT-2 stores Conv1D weights [in, out]; transformers transposes them before bitsandbytes quantizes them as
     * [out, in]. The export transposes the dequantized weights back so the original architecture loads them.
     */
    @Test
    void quantizedConv1dWeightsOfGpt2ModelsAreTransposedBack() throws Exception {
        Path model = tmp.resolve("gpt2ish");
        Files.createDirectories(model);
        Path src = Fixtures.checkpoint("llama-h64-nf4-dq");
        Files.copy(src.resolve("model.safetensors"), model.resolve("model.safetensors"));
        Files.writeString(model.resolve("config.json"), "{\"model_type\": \"gpt2\", \"torch_dtype\": \"float32\"}");
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            Export.of(c).to(out);
        }
        String name = "model.layers.0.mlp.down_proj.weight";
        try (Checkpoint e = Checkpoint.open(out);
             Checkpoint expected = Checkpoint.open(Fixtures.root().resolve(
                     "expected/checkpoints/llama-h64-nf4-dq/expected_dequant.safetensors"))) {
            assertEquals(List.of(160L, 64L), java.util.Arrays.stream(e.tensor(name).shape()).boxed().toList());
            float[] want = expected.readFloats(name);
            float[] got = e.readFloats(name);
            for (int o = 0; o < 64; o++) {
                for (int i = 0; i < 160; i++) {
                    assertEquals(Float.floatToRawIntBits(want[o * 160 + i]), Float.floatToRawIntBits(got[i * 64 + o]));
                }
            }
            assertEquals(List.of(128L, 64L), java.util.Arrays.stream(e.tensor("model.embed_tokens.weight").shape())
                    .boxed().toList(), "plain tensors keep their stored layout");
        }
    }

    /** transformers saves a tied lm_head once, as the input embedding; an export does the same. */
    @Test
    void aTiedLmHeadIsLeftOutAsTransformersSavesIt() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 8, 16,
                "{\"torch_dtype\": \"bfloat16\", \"tie_word_embeddings\": true}");
        Path withHead = tmp.resolve("m2");
        try (Checkpoint c = Checkpoint.open(model)) {
            byte[] bytes = c.readBytes("model.layers.0.mlp.w.weight");
            dev.dequant4j.internal.safetensors.SafetensorsWriter.write(withHead, List.of(
                    new dev.dequant4j.internal.safetensors.SafetensorsWriter.TensorData(
                            new dev.dequant4j.internal.safetensors.ShardedLayout.Spec("model.embed_tokens.weight",
                                    DType.BF16, new long[] {8, 16}), java.lang.foreign.MemorySegment.ofArray(bytes)),
                    new dev.dequant4j.internal.safetensors.SafetensorsWriter.TensorData(
                            new dev.dequant4j.internal.safetensors.ShardedLayout.Spec("lm_head.weight", DType.BF16,
                                    new long[] {8, 16}), java.lang.foreign.MemorySegment.ofArray(bytes))),
                    Long.MAX_VALUE, false);
        }
        Files.copy(model.resolve("config.json"), withHead.resolve("config.json"));
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(withHead)) {
            Export.of(c).to(out);
        }
        try (Checkpoint e = Checkpoint.open(out)) {
            assertEquals(List.of("model.embed_tokens.weight"), e.tensors().stream().map(TensorInfo::name).toList());
        }
    }

    @Test
    void checkpointsOfOtherQuantizationMethodsAreRefused() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 4, 4,
                "{\"torch_dtype\": \"float16\", \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}}");
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Export.of(c).to(tmp.resolve("out")));
            assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, e.kind());
            assertEquals(model.resolve("config.json") + ": quantization_config.quant_method is 'gptq'; dequant4j "
                    + "dequantizes bitsandbytes checkpoints only", e.getMessage());
        }
        assertEquals(List.of(model), siblings());
    }

    @Test
    void dtypeKeyOfTheSourceIsKept() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 4, 4, "{\"model_type\": \"llama\", \"dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            ExportResult r = Export.of(c).to(out);
            assertEquals(DType.BF16, r.dtype(), "default is the model's own dtype");
        }
        JsonObject cfg = Json.readObject(out.resolve("config.json"), 1 << 20);
        assertEquals(List.of("model_type", "dtype"), List.copyOf(cfg.keys()));
        assertEquals("bfloat16", cfg.getString("dtype"));
    }

    @Test
    void smallShardSizeGivesSeveralShardsWithACorrectIndex() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 5, 64, 64, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            Export.of(c).dtype(DType.F32).maxShardBytes(40_000).to(out);
        }
        try (Checkpoint e = Checkpoint.open(out); Checkpoint src = Checkpoint.open(model)) {
            assertEquals(3, e.files().size(), "two 16 KiB F32 tensors fit a 40 kB shard, a third does not");
            for (TensorInfo t : src.tensors()) {
                float[] a = src.readFloats(t.name());
                float[] b = e.readFloats(t.name());
                for (int i = 0; i < a.length; i++) {
                    assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]));
                }
            }
        }
        JsonObject index = Json.readObject(out.resolve("model.safetensors.index.json"), 1 << 20);
        assertEquals(5 * 64 * 64 * 4, index.getObject("metadata").getLong("total_size"));
        assertTrue(Files.readString(out.resolve("model.safetensors.index.json")).endsWith("}\n"));
        assertTrue(Manifest.verify(out).isEmpty());
    }

    @Test
    void verifyFailsWhenOneByteChanges() throws Exception {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            Export.of(c).to(out);
        }
        assertEquals(List.of(), Manifest.verify(out));
        Path f = out.resolve("model.safetensors");
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.allocate(1);
            long pos = ch.size() - 100;
            ch.read(b, pos);
            b.put(0, (byte) (b.get(0) ^ 1));
            b.rewind();
            ch.write(b, pos);
        }
        List<String> problems = Manifest.verify(out);
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.getFirst().contains("model.safetensors: sha256"), problems.getFirst());
    }

    /** One appended byte used to give 23 lines: the size, the header's trailing bytes and every tensor "in no file". */
    @Test
    void aBrokenFileIsOneProblemNotACascade() throws Exception {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            Export.of(c).maxShardBytes(100_000).to(out);
        }
        Path shard;
        try (Stream<Path> s = Files.list(out)) {
            shard = s.filter(f -> f.getFileName().toString().startsWith("model-00001-of-")).findFirst().orElseThrow();
        }
        Files.write(shard, new byte[] {0}, StandardOpenOption.APPEND);
        List<String> problems = Manifest.verify(out);
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.getFirst().startsWith(shard + ": size "), problems.getFirst());
    }

    @Test
    void existingTargetIsRefusedWithoutOverwriteAndReplacedWithIt() throws Exception {
        Path out = tmp.resolve("out");
        Files.createDirectories(out);
        Files.writeString(out.resolve("keep.txt"), "mine");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4"))) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Export.of(c).to(out));
            assertTrue(e.getMessage().contains("already exists"), e.getMessage());
            assertEquals(Dequant4jException.Kind.OUTPUT_EXISTS, e.kind());
            assertEquals("mine", Files.readString(out.resolve("keep.txt")));
            Export.of(c).overwrite(true).to(out);
        }
        assertFalse(Files.exists(out.resolve("keep.txt")));
        assertEquals(List.of(out), siblings());
    }

    @Test
    void outputThatWouldReplaceTheInputIsRefused() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 4, 4, "{}");
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).overwrite(true).to(tmp));
            assertTrue(e.getMessage().contains("would replace an input"), e.getMessage());
            assertEquals(Dequant4jException.Kind.INVALID_REQUEST, e.kind());
        }
        assertTrue(Files.exists(model.resolve("model.safetensors")));
    }

    @Test
    void ioErrorInTheMiddleOfWritingLeavesNothing() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 6, 256, 256, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        AtomicInteger writes = new AtomicInteger();
        SequentialWriter.ChannelFactory failing = (p, options) -> new FailingChannel(FileChannel.open(p, options),
                writes, 3);
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Exporter.run(new Exporter.Request(c,
                    null, List.of(), DType.F32, Backend.CPU, 200_000, 2, 1 << 20,
                    ProgressListener.NONE, out, false, false, failing)));
            assertTrue(e.getMessage().contains("No space left on device"), e.getMessage());
            assertTrue(e.getMessage().contains("disk full?"), e.getMessage());
            assertEquals(Dequant4jException.Kind.IO, e.kind());
        }
        assertFalse(Files.exists(out));
        assertEquals(List.of(model), siblings(), "no temporary directory left");
    }

    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(ints = {1, 8})
    void cancellingFromTheListenerLeavesNothing(int threads) throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 8, 256, 256, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        AtomicInteger seen = new AtomicInteger();
        ProgressListener cancelAfterTwo = new ProgressListener() {
            @Override
            public void onTensor(String name, int index, long bytesDone) {
                seen.set(index);
            }

            @Override
            public boolean isCancelled() {
                return seen.get() >= 2;
            }
        };
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).threads(threads).memoryBudget(4 << 20).maxShardBytes(200_000)
                            .progress(cancelAfterTwo).to(out));
            assertTrue(e.getMessage().contains("cancelled"), e.getMessage());
            assertEquals(Dequant4jException.Kind.CANCELLED, e.kind());
        }
        assertEquals(List.of(model), siblings());
    }

    /** A channel that fails like a full disk on its n-th write. */
    static final class FailingChannel extends FileChannel {
        private final FileChannel delegate;
        private final AtomicInteger writes;
        private final int failAt;

        FailingChannel(FileChannel delegate, AtomicInteger writes, int failAt) {
            this.delegate = delegate;
            this.writes = writes;
            this.failAt = failAt;
        }

        @Override
        public int write(ByteBuffer src, long position) throws IOException {
            if (writes.incrementAndGet() >= failAt) {
                throw new IOException("No space left on device");
            }
            return delegate.write(src, position);
        }

        @Override
        public int read(ByteBuffer dst) throws IOException {
            return delegate.read(dst);
        }

        @Override
        public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
            return delegate.read(dsts, offset, length);
        }

        @Override
        public int write(ByteBuffer src) throws IOException {
            int n = write(src, delegate.position());
            delegate.position(delegate.position() + n);
            return n;
        }

        @Override
        public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
            throw new IOException("not used");
        }

        @Override
        public long position() throws IOException {
            return delegate.position();
        }

        @Override
        public FileChannel position(long newPosition) throws IOException {
            delegate.position(newPosition);
            return this;
        }

        @Override
        public long size() throws IOException {
            return delegate.size();
        }

        @Override
        public FileChannel truncate(long size) throws IOException {
            delegate.truncate(size);
            return this;
        }

        @Override
        public void force(boolean metaData) throws IOException {
            delegate.force(metaData);
        }

        @Override
        public long transferTo(long position, long count, java.nio.channels.WritableByteChannel target)
                throws IOException {
            return delegate.transferTo(position, count, target);
        }

        @Override
        public long transferFrom(java.nio.channels.ReadableByteChannel src, long position, long count)
                throws IOException {
            return delegate.transferFrom(src, position, count);
        }

        @Override
        public int read(ByteBuffer dst, long position) throws IOException {
            return delegate.read(dst, position);
        }

        @Override
        public java.nio.MappedByteBuffer map(MapMode mode, long position, long size) throws IOException {
            return delegate.map(mode, position, size);
        }

        @Override
        public java.nio.channels.FileLock lock(long position, long size, boolean shared) throws IOException {
            return delegate.lock(position, size, shared);
        }

        @Override
        public java.nio.channels.FileLock tryLock(long position, long size, boolean shared) throws IOException {
            return delegate.tryLock(position, size, shared);
        }

        @Override
        protected void implCloseChannel() throws IOException {
            delegate.close();
        }
    }
}

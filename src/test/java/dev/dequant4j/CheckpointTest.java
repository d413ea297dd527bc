package dev.dequant4j;

import static dev.dequant4j.RawSafetensors.bf16Value;
import static dev.dequant4j.RawSafetensors.f16Value;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The plain-tensor API of {@link Checkpoint}: listing, float32 reads, raw bytes, config, threads and close. */
class CheckpointTest {
    @TempDir
    Path dir;
    Path file;

    static final int ALL = 1 << 16;

    /** Every 16-bit pattern, as little-endian bytes. */
    static byte[] allPatterns() {
        int[] bits = new int[ALL];
        for (int i = 0; i < ALL; i++) {
            bits[i] = i;
        }
        return RawSafetensors.u16(bits);
    }

    static final float[] F32_VALUES = {0f, -0f, 1f, -2.5f, Float.MIN_VALUE, Float.MAX_VALUE, Float.NEGATIVE_INFINITY,
        65504f, 65520f, 65519.99f, 1e-8f, 3.0517578125e-5f, 0.1f, 1.00048828125f, 1.0014648f, 3.3895314e38f,
        3.3961776e38f, Float.intBitsToFloat(0x3F808000), Float.intBitsToFloat(0x3F818000), Float.NaN};

    @BeforeEach
    void model() throws IOException {
        ByteBuffer f64 = ByteBuffer.allocate(24).order(ByteOrder.LITTLE_ENDIAN).putDouble(1.0 / 3).putDouble(-1e300)
                .putDouble(Double.MIN_VALUE);
        file = RawSafetensors.write(dir.resolve("model").resolve("model.safetensors"), RawSafetensors.file(List.of(
                new RawSafetensors.Tensor("f16.all", "F16", new long[] {256, 256}, allPatterns()),
                new RawSafetensors.Tensor("bf16.all", "BF16", new long[] {ALL}, allPatterns()),
                new RawSafetensors.Tensor("f32", "F32", new long[] {4, 5}, RawSafetensors.f32(F32_VALUES)),
                new RawSafetensors.Tensor("f64", "F64", new long[] {3}, f64.array()),
                new RawSafetensors.Tensor("i32", "I32", new long[] {2}, new byte[] {1, 0, 0, 0, -1, -1, -1, -1}),
                new RawSafetensors.Tensor("flag", "BOOL", new long[] {}, new byte[] {1}),
                new RawSafetensors.Tensor("empty", "F16", new long[] {0, 4}, new byte[0]),
                new RawSafetensors.Tensor("layers.10.w", "F32", new long[] {1}, RawSafetensors.f32(10)),
                new RawSafetensors.Tensor("layers.2.w", "F32", new long[] {1}, RawSafetensors.f32(2)))));
        Files.writeString(dir.resolve("model").resolve("config.json"), """
                {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                 "rms_norm_eps": 1e-05, "big": 18446744073709551616, "nested": {"z": null, "a": [true, 1.50]},
                 "torch_dtype": "bfloat16"}""");
    }

    private static void assertF32(double expected, float got, String what) {
        if (Double.isNaN(expected)) {
            assertTrue(Float.isNaN(got), what + ": NaN expected, got " + got);
        } else {
            assertEquals((float) expected, got, what);
            assertEquals(Float.floatToRawIntBits((float) expected), Float.floatToRawIntBits(got), what + " (sign)");
        }
    }

    @Test
    void listsTensorsInNaturalOrderWithDtypeShapeAndBytes() {
        try (Checkpoint c = Checkpoint.open(dir.resolve("model"))) {
            assertEquals(List.of("bf16.all", "empty", "f16.all", "f32", "f64", "flag", "i32", "layers.2.w", "layers.10.w"),
                    c.tensors().stream().map(TensorInfo::name).toList());
            TensorInfo f16 = c.tensor("f16.all");
            assertEquals(DType.F16, f16.dtype());
            assertEquals(QuantKind.PLAIN, f16.kind());
            assertArrayEquals(new long[] {256, 256}, f16.shape());
            assertEquals(2L * ALL, f16.storedBytes());
            assertEquals(List.of("f16.all"), f16.components());
            assertEquals(0, c.tensor("flag").shape().length);
            assertEquals(1, c.tensor("flag").numel());
            assertEquals(0, c.tensor("empty").numel());
            assertEquals(Optional.empty(), c.find("nope"));
            assertEquals(List.of(file), c.files());
            assertEquals(dir.resolve("model"), c.directory());
            assertEquals(9, c.storedTensors().size());
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> c.tensor("nope"));
            assertEquals(dir.resolve("model") + ": tensor 'nope': no such tensor", e.getMessage());
            assertEquals(Dequant4jException.Kind.INVALID_REQUEST, e.kind());
            assertEquals(Optional.of("nope"), e.tensor());
        }
    }

    @Test
    void everyF16AndBf16BitPatternReadsAsItsExactValue() {
        try (Checkpoint c = Checkpoint.open(file)) {
            float[] h = c.readFloats("f16.all");
            float[] b = c.readFloats("bf16.all");
            assertEquals(ALL, h.length);
            for (int i = 0; i < ALL; i++) {
                assertF32(f16Value(i), h[i], "F16 0x" + Integer.toHexString(i));
                assertF32(bf16Value(i), b[i], "BF16 0x" + Integer.toHexString(i));
                if (!Float.isNaN(b[i])) {
                    assertEquals(i << 16, Float.floatToRawIntBits(b[i]));
                }
            }
        }
    }

    @Test
    void f32AndF64ReadAsFloat32() {
        try (Checkpoint c = Checkpoint.open(file)) {
            float[] f = c.readFloats("f32");
            for (int i = 0; i < F32_VALUES.length; i++) {
                assertF32(F32_VALUES[i], f[i], "F32[" + i + "]");
            }
            float[] d = c.readFloats("f64");
            assertArrayEquals(new float[] {(float) (1.0 / 3), Float.NEGATIVE_INFINITY, 0f}, d);
            assertEquals(0, c.readFloats("empty").length);
        }
    }

    @Test
    void rangesOfAFlattenedTensor() {
        try (Checkpoint c = Checkpoint.open(file)) {
            float[] dst = new float[10];
            c.readFloats("f16.all", 0x3C00 - 2, dst, 3, 5);
            for (int i = 0; i < 5; i++) {
                assertF32(f16Value(0x3C00 - 2 + i), dst[3 + i], "range " + i);
            }
            assertEquals(0f, dst[2]);
            assertEquals(0f, dst[8]);
            assertThrows(IndexOutOfBoundsException.class, () -> c.readFloats("f16.all", ALL - 2, dst, 0, 3));
            assertThrows(IndexOutOfBoundsException.class, () -> c.readFloats("f16.all", -1, dst, 0, 1));
            assertThrows(IndexOutOfBoundsException.class, () -> c.readFloats("f16.all", 0, dst, 8, 3));
        }
    }

    @Test
    void readsIntoACallersSegmentInNativeOrder() {
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(4L * ALL + 4);
            seg.set(ValueLayout.JAVA_INT, 4L * ALL, 0xCAFEBABE);
            c.readFloats("bf16.all", seg);
            for (int i = 0; i < ALL; i++) {
                assertF32(bf16Value(i), seg.getAtIndex(ValueLayout.JAVA_FLOAT, i), "BF16 0x" + Integer.toHexString(i));
            }
            assertEquals(0xCAFEBABE, seg.get(ValueLayout.JAVA_INT, 4L * ALL), "nothing written past the tensor");
            c.readFloats("f16.all", seg);
            for (int i = 0; i < ALL; i++) {
                assertF32(f16Value(i), seg.getAtIndex(ValueLayout.JAVA_FLOAT, i), "F16 0x" + Integer.toHexString(i));
            }
            MemorySegment small = arena.allocate(4L * ALL - 1);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.readFloats("f16.all", small));
            assertEquals("f16.all needs 262144 bytes, the segment has 262143", e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> c.read("f32", DType.I32, seg));
        }
    }

    /** Nearest value of a 16-bit float format, ties to even, found by search over its (monotonic) bit patterns. */
    private static int nearest(double v, boolean bf16) {
        int inf = bf16 ? 0x7F80 : 0x7C00;
        double infAsNext = bf16 ? Math.pow(2, 128) : 65536;   // where the next binade would start
        java.util.function.IntToDoubleFunction value = b -> b == inf ? infAsNext : bf16 ? bf16Value(b) : f16Value(b);
        double a = Math.abs(v);
        int lo = 0;
        int hi = inf;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (value.applyAsDouble(mid) <= a) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        int pick = lo;
        if (lo < inf) {
            double below = a - value.applyAsDouble(lo);
            double above = value.applyAsDouble(lo + 1) - a;
            if (above < below || (above == below && (lo & 1) == 1)) {
                pick = lo + 1;
            }
        }
        int sign = Double.doubleToRawLongBits(v) < 0 ? 0x8000 : 0;
        return sign | pick;
    }

    @Test
    void readAsF16AndBf16RoundsOnceToNearestEven() {
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            MemorySegment h = arena.allocate(2L * F32_VALUES.length);
            MemorySegment b = arena.allocate(2L * F32_VALUES.length);
            c.read("f32", DType.F16, h);
            c.read("f32", DType.BF16, b);
            for (int i = 0; i < F32_VALUES.length; i++) {
                short hs = h.getAtIndex(ValueLayout.JAVA_SHORT, i);
                short bs = b.getAtIndex(ValueLayout.JAVA_SHORT, i);
                if (Float.isNaN(F32_VALUES[i])) {
                    assertTrue(Double.isNaN(f16Value(hs & 0xFFFF)) && Double.isNaN(bf16Value(bs & 0xFFFF)));
                    continue;
                }
                assertEquals(nearest(F32_VALUES[i], false), hs & 0xFFFF, "F16 of " + F32_VALUES[i]);
                assertEquals(nearest(F32_VALUES[i], true), bs & 0xFFFF, "BF16 of " + F32_VALUES[i]);
            }
            // F16 values read back as F16 unchanged, bit for bit (NaNs stay NaN)
            MemorySegment same = arena.allocate(2L * ALL);
            c.read("f16.all", DType.F16, same);
            for (int i = 0; i < ALL; i++) {
                int got = same.getAtIndex(ValueLayout.JAVA_SHORT, i) & 0xFFFF;
                if (Double.isNaN(f16Value(i))) {
                    assertTrue(Double.isNaN(f16Value(got)));
                } else {
                    assertEquals(i, got, "F16 0x" + Integer.toHexString(i));
                }
            }
        }
    }

    @Test
    void rawBytesOfAnyDtype() {
        try (Checkpoint c = Checkpoint.open(file)) {
            assertArrayEquals(new byte[] {1, 0, 0, 0, -1, -1, -1, -1}, c.readBytes("i32"));
            assertArrayEquals(new byte[] {1}, c.readBytes("flag"));
            assertArrayEquals(allPatterns(), c.readBytes("f16.all"));
            MemorySegment raw = c.rawData("f32");
            assertTrue(raw.isReadOnly());
            assertArrayEquals(RawSafetensors.f32(F32_VALUES), raw.toArray(ValueLayout.JAVA_BYTE));
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> c.readFloats("i32"));
            assertEquals(file + ": tensor 'i32': dtype I32 is not a float type", e.getMessage());
            e = assertThrows(Dequant4jException.class, () -> c.readBytes("nope"));
            assertEquals(file + ": tensor 'nope': no such stored tensor", e.getMessage());
        }
    }

    @Test
    void configIsATreeInFileOrder() throws IOException {
        try (Checkpoint c = Checkpoint.open(dir.resolve("model"))) {
            Map<String, Object> cfg = c.config().orElseThrow();
            assertEquals(List.of("model_type", "architectures", "hidden_size", "rms_norm_eps", "big", "nested",
                    "torch_dtype"), List.copyOf(cfg.keySet()));
            assertEquals("llama", cfg.get("model_type"));
            assertEquals(List.of("LlamaForCausalLM"), cfg.get("architectures"));
            assertEquals(64L, cfg.get("hidden_size"));
            assertEquals(1e-05, cfg.get("rms_norm_eps"));
            assertEquals(new java.math.BigInteger("18446744073709551616"), cfg.get("big"));
            @SuppressWarnings("unchecked")
            Map<String, Object> nested = (Map<String, Object>) cfg.get("nested");
            assertEquals(List.of("z", "a"), List.copyOf(nested.keySet()));
            assertEquals(null, nested.get("z"));
            assertEquals(List.of(true, 1.5), nested.get("a"));
            assertThrows(UnsupportedOperationException.class, () -> cfg.put("x", 1));
        }
        try (Checkpoint c = Checkpoint.open(file)) {
            assertEquals(Optional.empty(), c.config(), "a single file has no config");
        }
        // every fixture's config.json, keys in the order of the file's text
        Pattern topKey = Pattern.compile("(?m)^  \"([^\"]+)\":");
        for (String name : Fixtures.checkpointNames()) {
            Path ckpt = Fixtures.checkpoint(name);
            Matcher m = topKey.matcher(Files.readString(ckpt.resolve("config.json")));
            List<String> keys = new ArrayList<>();
            while (m.find()) {
                keys.add(m.group(1));
            }
            try (Checkpoint c = Checkpoint.open(ckpt)) {
                assertEquals(keys, List.copyOf(c.config().orElseThrow().keySet()), name);
            }
        }
    }

    @Test
    void manyThreadsReadOneCheckpoint() throws Exception {
        try (Checkpoint c = Checkpoint.open(file)) {
            float[] h = c.readFloats("f16.all");
            float[] b = c.readFloats("bf16.all");
            int threads = 16;
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            try {
                CountDownLatch start = new CountDownLatch(1);
                List<Future<Integer>> results = new ArrayList<>();
                for (int t = 0; t < threads; t++) {
                    int seed = t;
                    results.add(pool.submit(() -> {
                        start.await();
                        int checked = 0;
                        for (int round = 0; round < 30; round++) {
                            String name = (seed + round) % 2 == 0 ? "f16.all" : "bf16.all";
                            float[] want = name.equals("f16.all") ? h : b;
                            int off = (seed * 977 + round * 4099) % (ALL - 1000);
                            float[] got = new float[1000];
                            c.readFloats(name, off, got, 0, got.length);
                            for (int i = 0; i < got.length; i++) {
                                if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(want[off + i])) {
                                    throw new AssertionError(name + "[" + (off + i) + "]");
                                }
                            }
                            assertArrayEquals(RawSafetensors.u16(0x0100, 0x0101), java.util.Arrays.copyOfRange(
                                    c.readBytes("f16.all"), 0x100 * 2, 0x102 * 2));
                            checked++;
                        }
                        return checked;
                    }));
                }
                start.countDown();
                for (Future<Integer> f : results) {
                    assertEquals(30, f.get(60, TimeUnit.SECONDS));
                }
            } finally {
                pool.shutdownNow();
            }
        }
    }

    /** Closing while other threads read: every read either completes or fails with Dequant4jException. */
    @Test
    void closeWhileReadingFailsCleanly() throws Exception {
        for (int attempt = 0; attempt < 20; attempt++) {
            Checkpoint c = Checkpoint.open(file);
            int threads = 4;
            ExecutorService pool = Executors.newFixedThreadPool(threads);
            AtomicInteger reads = new AtomicInteger();
            CountDownLatch running = new CountDownLatch(threads);
            List<Future<Throwable>> results = new ArrayList<>();
            try (Arena arena = Arena.ofShared()) {
                MemorySegment seg = arena.allocate(4L * ALL);
                for (int t = 0; t < threads; t++) {
                    int which = t;
                    results.add(pool.submit(() -> {
                        running.countDown();
                        try {
                            while (true) {
                                switch (which % 4) {
                                    case 0 -> c.readFloats("f16.all");
                                    case 1 -> c.readFloats("bf16.all", seg);
                                    case 2 -> c.readBytes("f16.all");
                                    default -> c.read("f16.all", DType.BF16, seg);
                                }
                                reads.incrementAndGet();
                            }
                        } catch (Throwable e) {
                            return e;
                        }
                    }));
                }
                running.await();
                Thread.sleep(attempt % 5);
                c.close();
                for (Future<Throwable> f : results) {
                    Throwable e = f.get(60, TimeUnit.SECONDS);
                    assertInstanceOf(Dequant4jException.class, e, () -> "got " + e);
                    assertTrue(e.getMessage().endsWith("checkpoint is closed"), e.getMessage());
                }
            } finally {
                pool.shutdownNow();
            }
            c.close();
        }
        try (Checkpoint c = Checkpoint.open(file)) {
            assertEquals(ALL, c.readFloats("f16.all").length, "the file is fine after all that");
        }
    }

    @Test
    void afterCloseEveryReadFailsWithTheSameMessage() {
        Checkpoint c = Checkpoint.open(file);
        MemorySegment raw = c.rawData("f32");
        c.close();
        c.close();
        String closed = file + ": checkpoint is closed";
        assertEquals(closed, assertThrows(Dequant4jException.class, () -> c.readFloats("f32")).getMessage());
        assertEquals(closed, assertThrows(Dequant4jException.class, () -> c.readBytes("f32")).getMessage());
        assertEquals(closed, assertThrows(Dequant4jException.class, () -> c.rawData("f32")).getMessage());
        assertThrows(IllegalStateException.class, () -> raw.get(ValueLayout.JAVA_BYTE, 0),
                "a raw view is valid only until close");
        assertEquals(9, c.tensors().size(), "the listing stays available");
    }

    /** An interrupted reader (a cancelled task) must not break the checkpoint for every other reader. */
    @Test
    void anInterruptedReaderDoesNotCloseTheCheckpoint() throws Exception {
        try (Checkpoint c = Checkpoint.open(file)) {
            Thread t = new Thread(() -> {
                Thread.currentThread().interrupt();
                c.readFloats("f16.all");
                c.readBytes("bf16.all");
                assertTrue(Thread.currentThread().isInterrupted(), "the interrupt status is kept");
            });
            List<Throwable> failures = new ArrayList<>();
            t.setUncaughtExceptionHandler((th, e) -> failures.add(e));
            t.start();
            t.join(60_000);
            assertEquals(List.of(), failures);
            float[] h = c.readFloats("f16.all");
            assertF32(f16Value(0x3C00), h[0x3C00], "still readable");
        }
    }

    @Test
    void openRefusesWhatIsNotACheckpoint() throws IOException {
        Path missing = dir.resolve("missing");
        Dequant4jException gone = assertThrows(Dequant4jException.class, () -> Checkpoint.open(missing));
        assertEquals(missing + ": no such file or directory", gone.getMessage());
        assertEquals(Dequant4jException.Kind.IO, gone.kind());
        assertEquals(Optional.of(missing), gone.file());

        Path two = Files.createDirectory(dir.resolve("two"));
        Files.copy(file, two.resolve("a.safetensors"));
        Files.copy(file, two.resolve("b.safetensors"));
        assertEquals(two + ": has 2 .safetensors files but no model.safetensors.index.json saying which belong to the "
                + "model", assertThrows(Dequant4jException.class, () -> Checkpoint.open(two)).getMessage());

        Path bin = Files.createDirectory(dir.resolve("bin"));
        Files.writeString(bin.resolve("pytorch_model.bin"), "pickle");
        Dequant4jException pickle = assertThrows(Dequant4jException.class, () -> Checkpoint.open(bin));
        assertEquals(bin + ": has only PyTorch .bin weights; dequant4j reads safetensors (convert with transformers "
                + "first)", pickle.getMessage());
        assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, pickle.kind());

        Path empty = Files.createDirectory(dir.resolve("empty"));
        assertEquals(empty + ": no model.safetensors, model.safetensors.index.json or other .safetensors file",
                assertThrows(Dequant4jException.class, () -> Checkpoint.open(empty)).getMessage());

        Path adapter = Fixtures.adapter("h64-lora-r8");
        assertTrue(assertThrows(Dequant4jException.class, () -> Checkpoint.open(adapter)).getMessage()
                .startsWith(adapter + ": this is a LoRA adapter directory (adapter_config.json), not a model;"));

        Path badConfig = Files.createDirectory(dir.resolve("badconfig"));
        Files.copy(file, badConfig.resolve("model.safetensors"));
        Files.writeString(badConfig.resolve("config.json"), "{\"a\": 1,}");
        Dequant4jException bad = assertThrows(Dequant4jException.class, () -> Checkpoint.open(badConfig));
        assertEquals(badConfig.resolve("config.json") + ": invalid JSON: expected a string key in object at byte 8",
                bad.getMessage());
        assertEquals(Dequant4jException.Kind.CORRUPT_INPUT, bad.kind());
        assertEquals(Optional.empty(), bad.tensor());
    }

    @Test
    void aDirectoryWithOneOtherSafetensorsFileAndNoConfig() throws IOException {
        Path d = Files.createDirectory(dir.resolve("other"));
        Files.copy(file, d.resolve("weights.safetensors"));
        try (Checkpoint c = Checkpoint.open(d)) {
            assertEquals(List.of(d.resolve("weights.safetensors")), c.files());
            assertFalse(c.config().isPresent());
        }
    }
}

package dev.dequant4j.bench;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Reading 64 M-element plain tensors as float32 through {@link Checkpoint#readFloats(String, MemorySegment)}, from a
 * file in the page cache: F16 and BF16 (converted) against F32 (copied) through the same API, and a raw copy of the
 * F16 bytes as the memory floor. One thread.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "--add-modules=jdk.incubator.vector"})
public class ReadThroughputBenchmark {
    static final int N = 64 << 20;

    private Path dir;
    private Checkpoint checkpoint;
    private Arena arena;
    private MemorySegment dst;

    @Setup(Level.Trial)
    public void setup() throws IOException {
        dir = Files.createTempDirectory("dequant4j-read");
        arena = Arena.ofShared();
        SplittableRandom rnd = new SplittableRandom(42);
        MemorySegment f16 = arena.allocate(2L * N);
        MemorySegment bf16 = arena.allocate(2L * N);
        MemorySegment f32 = arena.allocate(4L * N);
        for (long i = 0; i < N; i++) {
            float v = (float) rnd.nextGaussian() * 0.02f;
            f32.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, v);
            f16.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, Float.floatToFloat16(v));
            bf16.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) (Float.floatToRawIntBits(v) >>> 16));
        }
        Path out = dir.resolve("model");
        long[] shape = {N / 4096, 4096};
        SafetensorsWriter.write(out, List.of(
                new SafetensorsWriter.TensorData(new ShardedLayout.Spec("f16", DType.F16, shape), f16),
                new SafetensorsWriter.TensorData(new ShardedLayout.Spec("bf16", DType.BF16, shape), bf16),
                new SafetensorsWriter.TensorData(new ShardedLayout.Spec("f32", DType.F32, shape), f32)),
                Long.MAX_VALUE, false);
        checkpoint = Checkpoint.open(out);
        dst = arena.allocate(4L * N, 64);
        // touch the source pages once so that every iteration reads from the page cache
        for (String name : List.of("f32", "f16", "bf16")) {
            checkpoint.readFloats(name, dst);
        }
        System.out.println("kernels: " + Kernels.get().name() + " (" + Kernels.describe() + ")");
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        checkpoint.close();
        arena.close();
        try (var s = Files.walk(dir)) {
            for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }

    @Benchmark
    public MemorySegment f16ToF32() {
        checkpoint.readFloats("f16", dst);
        return dst;
    }

    @Benchmark
    public MemorySegment bf16ToF32() {
        checkpoint.readFloats("bf16", dst);
        return dst;
    }

    /** Baseline: the same API on F32 data (no conversion, twice the source bytes). */
    @Benchmark
    public MemorySegment f32ToF32() {
        checkpoint.readFloats("f32", dst);
        return dst;
    }

    /** Floor: copying the F16 tensor's bytes from the mapping, unconverted. */
    @Benchmark
    public MemorySegment rawCopyF16Bytes() {
        MemorySegment.copy(checkpoint.rawData("f16"), 0, dst, 0, 2L * N);
        return dst;
    }
}

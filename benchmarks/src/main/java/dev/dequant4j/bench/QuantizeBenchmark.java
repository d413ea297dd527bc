package dev.dequant4j.bench;

import dev.dequant4j.internal.gguf.GgmlQuantize;
import dev.dequant4j.internal.gguf.GgmlType;
import java.nio.ByteBuffer;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * GgmlQuantize on one thread: 64 rows of 4096 normal(0, 0.02) values (a Llama-3-8B row length, one export chunk),
 * into a direct buffer. Score: elements per second; {@code cpuNanos}: CPU-ns of the thread per second, so elements
 * per CPU-second = score / (cpuNanos / 1e9), the figure to compare with ggml's own quantizer on the same rows
 * (scripts/fixtures/ggml_quantize_ref.c with REPEAT; docs/BENCHMARKS.md).
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(1)
@State(Scope.Thread)
public class QuantizeBenchmark {
    static final int ROWS = 64;
    static final int COLS = 4096;

    @Param({"Q8_0", "Q4_K", "Q5_K", "Q6_K"})
    public String type;

    private GgmlType t;
    private float[] src;
    private ByteBuffer dst;

    @Setup
    public void setup() {
        t = GgmlType.valueOf(type);
        Random r = new Random(17);
        src = new float[ROWS * COLS];
        for (int i = 0; i < src.length; i++) {
            src[i] = (float) (r.nextGaussian() * 0.02);
        }
        dst = ByteBuffer.allocateDirect((int) (ROWS * GgmlQuantize.rowSize(t, COLS)));
    }

    @Benchmark
    @OperationsPerInvocation(ROWS * COLS)
    public ByteBuffer quantize(KernelBenchmark.CpuTime cpu) {
        long t0 = KernelBenchmark.CpuTime.now();
        dst.clear();
        GgmlQuantize.quantize(t, src, 0, ROWS, COLS, dst);
        cpu.cpuNanos += KernelBenchmark.CpuTime.now() - t0;
        return dst;
    }
}

package dev.dequant4j.bench;

import dev.dequant4j.internal.bnb.Fp4;
import dev.dequant4j.internal.bnb.Nf4;
import dev.dequant4j.internal.cpu.CpuKernels;
import dev.dequant4j.internal.cpu.ScalarKernels;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * The CPU kernels, scalar reference against Vector API, in elements per second (ops/s = elements/s).
 *
 * <p>Dequantization runs over a whole 4096 x 14336 tensor (58.7 M elements, a Llama-3-8B MLP matrix) in 64 Ki-element
 * chunks, as {@code Checkpoint.read} does: per chunk the kernel writes float32 into a cache-resident buffer, which is
 * then rounded into the half-precision output; the packed input and the output stream through DRAM.
 *
 * <p>{@code loraDelta} runs on a cache-resident chunk of 64 rows x 4096 columns (as {@code MergeRunner} calls it);
 * FLOP/s = 2 r x elements/s.
 *
 * <p>The build machines are shared, so each benchmark also counts the CPU time of its thread ({@code cpuNanos}, a
 * secondary result in ns per second of wall time, i.e. the share of a core the benchmark got): elements per second
 * divided by that share is the throughput per CPU-second, which other processes disturb much less.
 */
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
public class KernelBenchmark {
    static final int ROWS = 14336;
    static final int COLS = 4096;
    static final int N = ROWS * COLS;
    static final int CHUNK = 1 << 16;
    static final int BLOCKSIZE = 64;
    static final int BLOCK_SHIFT = 6;

    /**
     * "scalar": the reference; "vector": the Vector API kernels, constructed directly (fails if unavailable). Prints
     * the name, which gives the vector size in use (panama-256, ...), into the benchmark's log.
     */
    static CpuKernels kernels(String impl) {
        CpuKernels k;
        if (impl.equals("scalar")) {
            k = ScalarKernels.INSTANCE;
        } else {
            try {
                k = (CpuKernels) Class.forName("dev.dequant4j.internal.cpu.VectorKernels").getConstructor()
                        .newInstance();
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("Vector API kernels unavailable: " + e.getCause(), e);
            }
        }
        System.out.println("kernels: " + k.name());
        return k;
    }

    /** CPU time of the benchmark thread, reported by JMH per second of wall time. */
    @AuxCounters(AuxCounters.Type.OPERATIONS)
    @State(Scope.Thread)
    public static class CpuTime {
        private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();

        public long cpuNanos;

        @Setup(Level.Iteration)
        public void reset() {
            cpuNanos = 0;
        }

        static long now() {
            return THREADS.getCurrentThreadCpuTime();
        }
    }

    @State(Scope.Thread)
    public static class Dequant {
        @Param({"scalar", "vector"})
        public String impl;

        CpuKernels k;
        byte[] packed = new byte[N / 2];
        /** Double quant: one uint8 code per 64-element block, one float per 256 blocks. */
        byte[] absmaxCodes = new byte[N / BLOCKSIZE];
        float[] nestedMap = new float[256];
        float[] nestedAbsmax = new float[N / BLOCKSIZE / 256];
        /** Plain float32 absmax (FP4 without double quant). */
        float[] absmax = new float[N / BLOCKSIZE];
        byte[] int8 = new byte[N];
        float[] scb = new float[ROWS];
        float[] nf4 = Nf4.code();
        float[] fp4 = Fp4.code();
        float[] scales = new float[CHUNK / BLOCKSIZE];
        byte[] chunkPacked = new byte[CHUNK / 2];
        float[] buf = new float[CHUNK];
        short[] out = new short[N];

        @Setup(Level.Trial)
        public void setUp() {
            k = kernels(impl);
            Random r = new Random(42);
            r.nextBytes(packed);
            r.nextBytes(absmaxCodes);
            r.nextBytes(int8);
            for (int i = 0; i < 256; i++) {
                nestedMap[i] = (float) r.nextGaussian();
            }
            for (int i = 0; i < nestedAbsmax.length; i++) {
                nestedAbsmax[i] = r.nextFloat();
            }
            for (int i = 0; i < absmax.length; i++) {
                absmax[i] = r.nextFloat();
            }
            for (int i = 0; i < scb.length; i++) {
                scb[i] = 127 * r.nextFloat();
            }
        }
    }

    /** NF4 with double-quant absmax to F16: absmax decode, 4-bit decode and f32->f16 per chunk. */
    @Benchmark
    @OperationsPerInvocation(N)
    public short[] nf4ToF16(Dequant s, CpuTime cpu) {
        long t0 = CpuTime.now();
        CpuKernels k = s.k;
        int blocksPerChunk = CHUNK / BLOCKSIZE;
        for (int off = 0; off < N; off += CHUNK) {
            int firstBlock = off / BLOCKSIZE;
            k.absmaxDoubleQuant(s.absmaxCodes, firstBlock, blocksPerChunk, s.nestedMap, s.nestedAbsmax,
                    firstBlock, 0.03125f, s.scales);
            dequantChunk(s, s.nf4, off);
            k.f32ToF16(s.buf, 0, s.out, off, CHUNK);
        }
        cpu.cpuNanos += CpuTime.now() - t0;
        return s.out;
    }

    /** FP4 with float32 absmax to BF16. */
    @Benchmark
    @OperationsPerInvocation(N)
    public short[] fp4ToBf16(Dequant s, CpuTime cpu) {
        long t0 = CpuTime.now();
        for (int off = 0; off < N; off += CHUNK) {
            System.arraycopy(s.absmax, off / BLOCKSIZE, s.scales, 0, CHUNK / BLOCKSIZE);
            dequantChunk(s, s.fp4, off);
            s.k.f32ToBf16(s.buf, 0, s.out, off, CHUNK);
        }
        cpu.cpuNanos += CpuTime.now() - t0;
        return s.out;
    }

    /**
     * The 4-bit decode of the chunk at element {@code off}, into {@code s.buf}. Its bytes are first copied into a
     * chunk-sized array, as {@code FourBitTensor.readF32} copies them out of the mapped file.
     */
    private static void dequantChunk(Dequant s, float[] code, int off) {
        System.arraycopy(s.packed, off / 2, s.chunkPacked, 0, CHUNK / 2);
        s.k.dequant4bit(code, s.chunkPacked, off, CHUNK, s.scales, BLOCK_SHIFT, s.buf, 0);
    }

    /** LLM.int8 rows to F16. */
    @Benchmark
    @OperationsPerInvocation(N)
    public short[] int8ToF16(Dequant s, CpuTime cpu) {
        long t0 = CpuTime.now();
        CpuKernels k = s.k;
        int rowsPerChunk = CHUNK / COLS;
        for (int off = 0; off < N; off += CHUNK) {
            int row0 = off / COLS;
            for (int i = 0; i < rowsPerChunk; i++) {
                k.dequantInt8(s.int8, off + i * COLS, COLS, s.scb[row0 + i], s.buf, i * COLS);
            }
            k.f32ToF16(s.buf, 0, s.out, off, CHUNK);
        }
        cpu.cpuNanos += CpuTime.now() - t0;
        return s.out;
    }

    @State(Scope.Thread)
    public static class Lora {
        @Param({"scalar", "vector"})
        public String impl;

        @Param({"8", "16", "64", "128"})
        public int r;

        static final int LORA_ROWS = 64;

        CpuKernels k;
        float[] w = new float[LORA_ROWS * COLS];
        float[] left;
        float[] right;

        @Setup(Level.Trial)
        public void setUp() {
            k = kernels(impl);
            Random rnd = new Random(42);
            left = new float[LORA_ROWS * r];
            right = new float[r * COLS];
            for (int i = 0; i < left.length; i++) {
                left[i] = (float) rnd.nextGaussian() * 0.01f;
            }
            for (int i = 0; i < right.length; i++) {
                right[i] = (float) rnd.nextGaussian() * 0.01f;
            }
            for (int i = 0; i < w.length; i++) {
                w[i] = (float) rnd.nextGaussian();
            }
        }
    }

    /** {@code W += (B @ A) * scale} on 64 rows x 4096 columns; elements/s of W. */
    @Benchmark
    @OperationsPerInvocation(Lora.LORA_ROWS * COLS)
    public float[] loraDelta(Lora s, CpuTime cpu) {
        long t0 = CpuTime.now();
        s.k.loraDelta(s.w, 0, Lora.LORA_ROWS, COLS, s.left, 0, s.right, s.r, 2f / s.r);
        cpu.cpuNanos += CpuTime.now() - t0;
        return s.w;
    }
}

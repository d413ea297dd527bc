package dev.dequant4j.internal.cuda;

import static org.bytedeco.cuda.global.cudart.cudaDevAttrAsyncEngineCount;
import static org.bytedeco.cuda.global.cudart.cudaDevAttrClockRate;
import static org.bytedeco.cuda.global.cudart.cudaDevAttrEccEnabled;
import static org.bytedeco.cuda.global.cudart.cudaDevAttrMultiProcessorCount;
import static org.bytedeco.cuda.global.cudart.cudaDeviceGetAttribute;
import static org.bytedeco.cuda.global.cudart.cudaEventCreate;
import static org.bytedeco.cuda.global.cudart.cudaEventDestroy;
import static org.bytedeco.cuda.global.cudart.cudaEventElapsedTime;
import static org.bytedeco.cuda.global.cudart.cudaEventRecord;
import static org.bytedeco.cuda.global.cudart.cudaEventSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaMemcpy;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToDevice;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaStreamCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaStreamDestroy;
import static org.bytedeco.cuda.global.cudart.cudaStreamNonBlocking;

import dev.dequant4j.internal.bnb.Fp4;
import dev.dequant4j.internal.bnb.Nf4;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.function.IntSupplier;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;

/**
 * Kernel benchmark for a GPU host: device-resident inputs, CUDA-event timing, and every figure also as a ratio to a
 * device-to-device cudaMemcpy measured in the same run (read + write bytes counted on both sides). Shape: a
 * Llama-3-8B MLP weight, 14336 x 4096 = 58.7 M elements, NF4/FP4 blocksize 64 with double quantization.
 *
 * <pre>java --enable-native-access=ALL-UNNAMED -cp target/test-classes:... dev.dequant4j.internal.cuda.CudaBench [reps]</pre>
 *
 * <p>It lives in the test tree, beside the GPU tests, so that the library jar holds no {@code main} that calls
 * {@code System.exit}; scripts/gpu-check.sh runs it from the test classes.
 */
public final class CudaBench {
    private CudaBench() {}

    private static final long ROWS = 14336;
    private static final long COLS = 4096;
    private static final long N = ROWS * COLS;
    private static final int BLOCK = 64;

    private record Result(String name, double medianMs, double bytes, double flops) {}

    public static void main(String[] args) {
        int reps = args.length > 0 ? Integer.parseInt(args[0]) : 20;
        CudaBackend.Availability a = CudaBackend.probe();
        if (!a.usable()) {
            System.out.println("CudaBench: CUDA not usable: " + a.reason());
            System.exit(2);
        }
        DeviceCheck.Check check = DeviceCheck.check(CudaRuntime.requestedDevice());
        DeviceCheck.Device device = check.device();
        int[] v = new int[1];
        cudaDeviceGetAttribute(v, cudaDevAttrMultiProcessorCount, device.index());
        int sms = v[0];
        cudaDeviceGetAttribute(v, cudaDevAttrClockRate, device.index());
        double clockHz = v[0] * 1e3;
        cudaDeviceGetAttribute(v, cudaDevAttrEccEnabled, device.index());
        boolean ecc = v[0] != 0;
        cudaDeviceGetAttribute(v, cudaDevAttrAsyncEngineCount, device.index());
        int copyEngines = v[0];
        // FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86, sm_89, sm_90.
        int lanes = device.major() == 8 && device.minor() == 0 ? 64 : 128;
        double fmaPerSecond = (double) sms * lanes * clockHz;
        System.out.println("CudaBench: " + device.describe());
        System.out.printf(Locale.ROOT, "  %d SMs, %.0f MHz boost clock, ECC %s, %d copy engines, FP32 FMA peak %.1f "
                + "TFLOP/s%n", sms, clockHz / 1e6, ecc ? "on" : "off", copyEngines, 2 * fmaPerSecond / 1e12);
        System.out.printf(Locale.ROOT, "  shape %d x %d = %.1f M elements, blocksize %d, double quant, %d reps "
                + "(median)%n%n", ROWS, COLS, N / 1e6, BLOCK, reps);

        try (Memory mem = new Memory(); CudaKernels.Source src = new CudaKernels.Source();
             CudaKernels.Step step = new CudaKernels.Step(1)) {
            Random rnd = new Random(1);
            long nb = N / BLOCK;
            long packed = upload(mem, "packed", randomBytes(rnd, N / 2));
            long codes = upload(mem, "absmax codes", randomBytes(rnd, nb));
            long int8 = upload(mem, "int8", randomBytes(rnd, N));
            float[] map = new float[256];
            for (int i = 0; i < 256; i++) {
                map[i] = (i - 127.5f) / 128f;
            }
            long nestedMap = upload(mem, "nested map", floats(map));
            long nestedAbsmax = upload(mem, "nested absmax", floats(gaussian(rnd, (int) ((nb + 255) / 256), 0.01f)));
            long scb = upload(mem, "scb", floats(gaussian(rnd, (int) ROWS, 0.1f)));
            long out = mem.device("output").ensure(4 * N).address();
            long copySrc = mem.device("copy source").ensure(2 * N).address();

            CUstream_st stream = new CUstream_st();
            CudaEngine.check(cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
            List<Result> results = new ArrayList<>();
            try {
                long s = stream.address();
                Result copy = time("cudaMemcpy D2D (F16-sized)", reps, 4.0 * N, 0, stream, () -> cudaMemcpyAsync(
                        CudaEngine.at(out), CudaEngine.at(copySrc), 2 * N, cudaMemcpyDeviceToDevice, stream));
                results.add(copy);
                double dq4Bytes = N / 2.0 + nb + 4.0 * ((nb + 255) / 256) + 2.0 * N;
                fourBit(src, Nf4.code(), packed, codes, nestedMap, nestedAbsmax);
                results.add(time("NF4 -> F16 dequant", reps, dq4Bytes, 0, stream,
                        () -> CudaKernels.dq4j_dequant(src, N, CudaKernels.F16, out, s)));
                fourBit(src, Fp4.code(), packed, codes, nestedMap, nestedAbsmax);
                results.add(time("FP4 -> BF16 dequant", reps, dq4Bytes, 0, stream,
                        () -> CudaKernels.dq4j_dequant(src, N, CudaKernels.BF16, out, s)));
                src.kind(CudaKernels.SRC_INT8).data(int8).scb(scb).cols(COLS).nested(0);
                results.add(time("int8 -> F16 dequant", reps, N + 4.0 * ROWS + 2.0 * N, 0, stream,
                        () -> CudaKernels.dq4j_dequant(src, N, CudaKernels.F16, out, s)));
                fourBit(src, Nf4.code(), packed, codes, nestedMap, nestedAbsmax);
                for (int r : new int[] {16, 64, 128}) {
                    long left = upload(mem, "B r=" + r, floats(gaussian(rnd, (int) ROWS * r, 0.01f)));
                    long right = upload(mem, "A r=" + r, floats(gaussian(rnd, r * (int) COLS, 0.02f)));
                    step.kind(CudaKernels.STEP_LORA).r(r).scale(2f).reserved(0).left(left).right(right).factor(0)
                            .values(0).row_map(0);
                    double bytes = dq4Bytes + 4.0 * r * (ROWS + COLS);
                    for (int flags : new int[] {CudaKernels.MERGE_FMA, 0}) {
                        String name = "NF4 + LoRA r=" + r + " -> F16 " + (flags == 0 ? "(exact)" : "(fma)");
                        results.add(time(name, reps, bytes, 2.0 * r * N, stream, () -> CudaKernels.dq4j_merge(src, 0,
                                ROWS, COLS, step, 1, flags, CudaKernels.F16, out, s)));
                    }
                }
            } finally {
                cudaStreamDestroy(stream);
            }
            report(results, fmaPerSecond);
        }
    }

    private static void fourBit(CudaKernels.Source src, float[] code, long packed, long codes, long nestedMap,
                                long nestedAbsmax) {
        src.kind(CudaKernels.SRC_4BIT).dtype(0).block_shift(Integer.numberOfTrailingZeros(BLOCK)).nested(1).elem0(0)
                .cols(0).data(packed).absmax(0).absmax_code(codes).nested_map(nestedMap).nested_absmax(nestedAbsmax)
                .scb(0).nested_offset(0.01f);
        for (int i = 0; i < 16; i++) {
            src.code(i, code[i]);
        }
    }

    private static Result time(String name, int reps, double bytes, double flops, CUstream_st stream,
                               IntSupplier launch) {
        CUevent_st start = new CUevent_st();
        CUevent_st stop = new CUevent_st();
        CudaEngine.check(cudaEventCreate(start), "cudaEventCreate");
        CudaEngine.check(cudaEventCreate(stop), "cudaEventCreate");
        try {
            double[] ms = new double[reps];
            float[] t = new float[1];
            for (int i = -3; i < reps; i++) {
                CudaEngine.check(cudaEventRecord(start, stream), "cudaEventRecord");
                int rc = launch.getAsInt();
                if (rc != 0) {
                    throw new IllegalStateException(name + ": " + CudaKernels.dq4j_error_string(rc) + " (" + rc + ")");
                }
                CudaEngine.check(cudaEventRecord(stop, stream), "cudaEventRecord");
                CudaEngine.check(cudaEventSynchronize(stop), "cudaEventSynchronize");
                CudaEngine.check(cudaEventElapsedTime(t, start, stop), "cudaEventElapsedTime");
                if (i >= 0) {
                    ms[i] = t[0];
                }
            }
            Arrays.sort(ms);
            return new Result(name, ms[reps / 2], bytes, flops);
        } finally {
            cudaEventDestroy(start);
            cudaEventDestroy(stop);
        }
    }

    private static void report(List<Result> results, double fmaPerSecond) {
        double copyBw = results.getFirst().bytes() / (results.getFirst().medianMs() / 1e3);
        System.out.printf(Locale.ROOT, "%-34s %9s %11s %10s %9s %10s%n", "kernel", "ms", "G elem/s", "GB/s", "of copy",
                "FMA bound");
        for (Result r : results) {
            double seconds = r.medianMs() / 1e3;
            double bw = r.bytes() / seconds;
            String bound = r.flops() > 0 ? String.format(Locale.ROOT, "%.2fx", seconds / (r.flops() / 2
                    / fmaPerSecond)) : "";
            System.out.printf(Locale.ROOT, "%-34s %9.3f %11.1f %10.1f %8.1f%% %10s%n", r.name(), r.medianMs(),
                    N / seconds / 1e9, bw / 1e9, 100 * bw / copyBw, bound);
        }
        System.out.println("\nGB/s counts bytes read + written (the copy: 2 x its size); \"FMA bound\" is the time "
                + "over the FP32 FMA peak's time for r multiply-adds per element (1.00x = at peak).");
    }

    private static long upload(Memory mem, String what, byte[] data) {
        Memory.Buffer host = mem.pinned(what + " staging").ensure(data.length);
        MemorySegment.copy(data, 0, host.segment(), ValueLayout.JAVA_BYTE, 0, data.length);
        long dev = mem.device(what).ensure(data.length).address();
        CudaEngine.check(cudaMemcpy(CudaEngine.at(dev), CudaEngine.at(host.address()), data.length,
                cudaMemcpyHostToDevice), "cudaMemcpy");
        return dev;
    }

    private static byte[] randomBytes(Random rnd, long n) {
        byte[] b = new byte[Math.toIntExact(n)];
        rnd.nextBytes(b);
        return b;
    }

    private static float[] gaussian(Random rnd, int n, float sigma) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) rnd.nextGaussian() * sigma;
        }
        return v;
    }

    private static byte[] floats(float[] v) {
        byte[] b = new byte[4 * v.length];
        MemorySegment.copy(v, 0, MemorySegment.ofArray(b), ValueLayout.JAVA_FLOAT_UNALIGNED, 0, v.length);
        return b;
    }
}

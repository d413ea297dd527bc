package dev.dequant4j.internal.cuda;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Fixtures;
import dev.dequant4j.SyntheticCheckpoint;
import dev.dequant4j.internal.bnb.LogicalTensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** Dequantization and conversion on the GPU give the scalar oracle's bits, in every output dtype. */
@Tag("gpu")
@ExtendWith(GpuCondition.class)
class CudaDequantGpuTest {
    private static final DType[] OUTS = {DType.F32, DType.F16, DType.BF16};

    private static CudaBackend cuda;
    /** The same device with tiny chunks: every tensor crosses chunk boundaries at odd offsets. */
    private static CudaBackend chunked;

    @TempDir
    static Path tmp;

    @BeforeAll
    static void open() {
        if (!Gpu.AVAILABILITY.usable()) {
            return;
        }
        cuda = CudaBackend.open(new CudaEngine.Options(1L << 24, false));
        chunked = CudaBackend.open(new CudaEngine.Options(3000, false));
    }

    @AfterAll
    static void close() {
        if (cuda != null) {
            cuda.close();
        }
        if (chunked != null) {
            chunked.close();
        }
    }

    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    private static void compare(CudaBackend backend, LogicalTensor t, DType out, Arena arena) {
        MemorySegment want = Oracle.expected(t, List.of(), out, arena);
        MemorySegment got = arena.allocate(want.byteSize(), 16);
        backend.materialize(t, List.of(), out, got);
        Oracle.assertBitsEqual(t.name() + " -> " + out, want, got, out);
    }

    /**
     * Real transformers + bitsandbytes saves, among them FP4 saved after a CPU forward, whose BF16 absmax is stored
     * transposed and must reach the device in block order, as the CPU path reads it.
     */
    @ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"gpt2-nf4-dq", "gpt2-fp4", "gpt2-int8",
            "gpt2-fp4-forward"})
    void everyRealGpt2TensorBitForBit(String name) {
        try (Checkpoint c = Checkpoint.open(Fixtures.root().resolve("real").resolve(name));
             Arena arena = Arena.ofConfined()) {
            long transposed = Gpu.tensors(c).values().stream()
                    .filter(t -> t instanceof dev.dequant4j.internal.bnb.FourBitTensor f && f.absmaxTransposed())
                    .count();
            org.junit.jupiter.api.Assertions.assertEquals(name.endsWith("-forward") ? 1 : 0, transposed);
            for (LogicalTensor t : Gpu.tensors(c).values()) {
                if (t.isFloat()) {
                    for (DType out : OUTS) {
                        compare(cuda, t, out, arena);
                        compare(chunked, t, out, arena);
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void everyFixtureTensorBitForBit(String name) {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name)); Arena arena = Arena.ofConfined()) {
            for (LogicalTensor t : Gpu.tensors(c).values()) {
                if (t.isFloat()) {
                    for (DType out : OUTS) {
                        compare(cuda, t, out, arena);
                        compare(chunked, t, out, arena);
                    }
                }
            }
        }
    }

    static Stream<Arguments> fourBitCases() {
        List<Arguments> cases = new ArrayList<>();
        long[][] shapes = {{1}, {33}, {7, 5}, {3, 1000}, {64, 64}, {160, 64}, {354, 48}, {48, 354}, {1, 100003},
            {5, 3, 4097}};
        int[] blocksizes = {32, 64, 128, 256, 512, 1024, 2048, 4096};
        int i = 0;
        for (long[] shape : shapes) {
            for (int bs : blocksizes) {
                String type = i % 2 == 0 ? "nf4" : "fp4";
                boolean nested = i % 3 != 2;
                DType absmax = nested ? DType.F32 : i % 3 == 0 ? DType.F16 : DType.BF16;
                cases.add(Arguments.of(shape, type, bs, nested, absmax, i++));
            }
        }
        return cases.stream();
    }

    @ParameterizedTest
    @MethodSource("fourBitCases")
    void fourBitOddShapesAndEveryBlocksize(long[] shape, String type, int blocksize, boolean nested, DType absmax,
                                           int seed) throws IOException {
        Path file = new SyntheticCheckpoint(seed).fourBit("w", shape, type, blocksize, nested, DType.BF16, absmax)
                .write(tmp.resolve("4bit-" + seed + ".safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            LogicalTensor t = Gpu.tensors(c).get("w.weight");
            for (DType out : OUTS) {
                compare(cuda, t, out, arena);
                compare(chunked, t, out, arena);
            }
        }
    }

    @Test
    void largeRandomTensors() throws IOException {
        Path file = new SyntheticCheckpoint(42)
                .fourBit("nf4", new long[] {4096, 4100}, "nf4", 64, true, DType.BF16, DType.F32)
                .fourBit("fp4", new long[] {2048, 3000}, "fp4", 128, false, DType.F16, DType.F32)
                .int8("int8", 1500, 4096)
                .write(tmp.resolve("large.safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            for (String name : List.of("nf4.weight", "fp4.weight", "int8.weight")) {
                for (DType out : OUTS) {
                    compare(cuda, Gpu.tensors(c).get(name), out, arena);
                }
            }
        }
    }

    @Test
    void int8RowsOfAnyLength() throws IOException {
        Path file = new SyntheticCheckpoint(7).int8("a", 37, 53).int8("b", 64, 64).int8("c", 3, 5000).int8("d", 1, 1)
                .write(tmp.resolve("int8.safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            for (String name : List.of("a.weight", "b.weight", "c.weight", "d.weight")) {
                for (DType out : OUTS) {
                    compare(cuda, Gpu.tensors(c).get(name), out, arena);
                    compare(chunked, Gpu.tensors(c).get(name), out, arena);
                }
            }
        }
    }

    /**
     * Scales a checkpoint may hold as infinities or NaNs with payloads: the products give the CPU's NaNs (an
     * operand's payload, or x86's default NaN for 0 * inf), not the GPU's canonical one, in every output dtype.
     */
    @Test
    void nonFiniteScalesGiveTheCpusNaNs() throws IOException {
        int[] specials = {0x7F800000, 0x7F812345, 0xFFC00001, 0xFF800000, 0x7FC0BEEF};
        SyntheticCheckpoint s = new SyntheticCheckpoint(13)
                .fourBit("plain", new long[] {16, 64}, "nf4", 64, false, DType.BF16, DType.F32)
                .fourBit("fp4", new long[] {16, 64}, "fp4", 64, false, DType.BF16, DType.F32)
                .fourBit("nested", new long[] {600, 64}, "nf4", 64, true, DType.BF16, DType.F32)
                .int8("int8", 8, 40);
        for (int i = 0; i < specials.length; i++) {
            s.setF32Bits("plain.weight.absmax", 2 * i, specials[i]);
            s.setF32Bits("fp4.weight.absmax", 2 * i + 1, specials[i]);
            s.setF32Bits("int8.SCB", i, specials[i]);
            s.setF32Bits("nested.weight.nested_quant_map", 40 * i, specials[i]);
        }
        // Infinity, not NaN: where two NaNs meet, the CPU's payload depends on the JIT's operand order.
        s.setF32Bits("nested.weight.nested_absmax", 1, 0x7F800000);
        Path file = s.write(tmp.resolve("non-finite.safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            for (String name : List.of("plain.weight", "fp4.weight", "nested.weight", "int8.weight")) {
                for (DType out : OUTS) {
                    compare(cuda, Gpu.tensors(c).get(name), out, arena);
                    compare(chunked, Gpu.tensors(c).get(name), out, arena);
                }
            }
        }
    }

    /** Random bit patterns: NaNs with payloads, infinities, subnormals, both zeros, overflow to F16 infinity. */
    @Test
    void plainConversionsOfEveryBitPattern() throws IOException {
        SyntheticCheckpoint s = new SyntheticCheckpoint(11);
        for (DType d : List.of(DType.F32, DType.F16, DType.BF16, DType.F64)) {
            long n = 100_003;
            byte[] bits = new byte[(int) d.byteSize(n)];
            s.random().nextBytes(bits);
            s.add("raw_" + d, d.name(), new long[] {n}, bits);
            s.plain("gauss_" + d, new long[] {17, 33}, d);
        }
        Path file = s.write(tmp.resolve("plain.safetensors"));
        try (Checkpoint c = Checkpoint.open(file); Arena arena = Arena.ofConfined()) {
            for (LogicalTensor t : Gpu.tensors(c).values()) {
                for (DType out : OUTS) {
                    compare(cuda, t, out, arena);
                    compare(chunked, t, out, arena);
                }
            }
        }
    }
}

package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.internal.cpu.ScalarKernels;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Every fixture checkpoint dequantizes bit for bit as bitsandbytes does (expected files made by bnb itself). */
class DequantConformanceTest {
    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void f32EqualsBitsandbytesBitForBit(String name) {
        Path expectedFile = Fixtures.root().resolve("expected/checkpoints").resolve(name)
                .resolve("expected_dequant.safetensors");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name));
             Checkpoint expected = Checkpoint.open(expectedFile)) {
            Set<String> quantized = c.tensors().stream().filter(TensorInfo::isQuantized).map(TensorInfo::name)
                    .collect(Collectors.toSet());
            Set<String> expectedNames = expected.tensors().stream().map(TensorInfo::name).collect(Collectors.toSet());
            assertEquals(expectedNames, quantized, "quantized tensors of " + name);
            for (String t : quantized) {
                float[] want = expected.readFloats(t);
                float[] got = c.readFloats(t);
                assertEquals(want.length, got.length, t);
                for (int i = 0; i < want.length; i++) {
                    if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                        throw new AssertionError(name + " " + t + "[" + i + "]: expected " + want[i] + " got " + got[i]);
                    }
                }
                assertTrue(java.util.Arrays.equals(c.tensor(t).shape(), expected.tensor(t).shape()), t + " shape");
            }
        }
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void f16AndBf16AreTheF32RoundedOnce(String name) {
        Path expectedFile = Fixtures.root().resolve("expected/checkpoints").resolve(name)
                .resolve("expected_dequant.safetensors");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name));
             Checkpoint expected = Checkpoint.open(expectedFile);
             Arena arena = Arena.ofConfined()) {
            for (TensorInfo e : expected.tensors()) {
                float[] want = expected.readFloats(e.name());
                MemorySegment f16 = arena.allocate(want.length * 2L);
                MemorySegment bf16 = arena.allocate(want.length * 2L);
                c.read(e.name(), DType.F16, f16);
                c.read(e.name(), DType.BF16, bf16);
                for (int i = 0; i < want.length; i++) {
                    assertEquals(Float.floatToFloat16(want[i]), f16.getAtIndex(ValueLayout.JAVA_SHORT, i),
                            e.name() + "[" + i + "] f16");
                    assertEquals(ScalarKernels.toBf16(want[i]), bf16.getAtIndex(ValueLayout.JAVA_SHORT, i),
                            e.name() + "[" + i + "] bf16");
                }
            }
        }
    }
}

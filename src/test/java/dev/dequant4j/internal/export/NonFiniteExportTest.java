package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** NaN, infinities and values beyond the output dtype's range fail the export, naming the tensor, unless allowed. */
class NonFiniteExportTest {
    @TempDir
    Path tmp;

    /** A model with one tensor of {@code n} small values and the given bit patterns at the given indices. */
    private Path model(DType dtype, int n, long[] at, int[] bits) throws Exception {
        Path dir = tmp.resolve("m");
        MemorySegment seg = Arena.ofAuto().allocate((long) n * (dtype.bits() / 8));
        for (int i = 0; i < n; i++) {
            switch (dtype) {
                case F32 -> seg.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, 0.25f);
                case F16 -> seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, Float.floatToFloat16(0.25f));
                default -> seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) 0x3E80);
            }
        }
        for (int j = 0; j < at.length; j++) {
            if (dtype == DType.F32) {
                seg.setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, at[j], bits[j]);
            } else {
                seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, at[j], (short) bits[j]);
            }
        }
        SafetensorsWriter.write(dir, List.of(new SafetensorsWriter.TensorData(new ShardedLayout.Spec(
                "model.layers.0.mlp.w.weight", dtype, new long[] {n / 10, 10}), seg)), Long.MAX_VALUE, false);
        Files.writeString(dir.resolve("config.json"), "{}");
        return dir;
    }

    @ParameterizedTest
    @CsvSource({
        // stored, output, bit patterns (NaN, +inf, -inf in the stored dtype), expected count
        "BF16, BF16, 0x7FC1:0x7F80:0xFF80, 3",
        "F16, F16, 0x7E01:0x7C00:0xFC00, 3",
        "F32, F32, 0x7FC00001:0x7F800000:0xFF800000, 3",
        "BF16, F16, 0x7FC1:0x7F80:0x4780, 3",
        "F32, BF16, 0x7FC00001:0x7F800000:0x7F7FFFFF, 3",
    })
    void failsNamingTheTensorAndCountingTheValues(DType stored, DType out, String patterns, int expected)
            throws Exception {
        String[] p = patterns.split(":");
        int[] bits = new int[p.length];
        for (int i = 0; i < p.length; i++) {
            bits[i] = (int) Long.decode(p[i]).longValue();
        }
        // 0x4780 in bf16 is 65536, beyond float16; 0x7F7FFFFF is FLT_MAX, which rounds to bf16 infinity.
        long[] at = {70_001, 70_005, 199_999};
        Path model = model(stored, 200_000, at, bits);
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).dtype(out).to(tmp.resolve("out")));
            assertEquals(model.resolve("model.safetensors") + ": tensor 'model.layers.0.mlp.w.weight': " + expected
                    + " non-finite value(s) in " + out + " (NaN, infinity or beyond the dtype's range; first at "
                    + "element 70001); use Export.allowNonFinite(true) to write them anyway", e.getMessage());
            assertEquals(Dequant4jException.Kind.NON_FINITE, e.kind());
            Export.of(c).dtype(out).allowNonFinite(true).to(tmp.resolve("out"));
        }
        try (Checkpoint e = Checkpoint.open(tmp.resolve("out"))) {
            float[] v = e.readFloats("model.layers.0.mlp.w.weight");
            assertEquals(true, Float.isNaN(v[70_001]));
            assertEquals(Float.POSITIVE_INFINITY, v[70_005]);
            assertEquals(0.25f, v[70_000]);
        }
    }
}

package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.export.Manifest;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** Exporting every fixture checkpoint without adapters reproduces bitsandbytes' dequantization bit for bit. */
class ExportConformanceTest {
    @TempDir
    Path tmp;

    static List<String> checkpoints() {
        return Fixtures.checkpointNames();
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void f32ExportEqualsExpectedDequant(String name) throws Exception {
        Path out = tmp.resolve("out");
        ExportResult r;
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(name))) {
            r = Export.of(c).dtype(DType.F32).threads(2).to(out);
        }
        assertEquals(DType.F32, r.dtype());
        try (Checkpoint exported = Checkpoint.open(out);
             Checkpoint expected = Checkpoint.open(Fixtures.root().resolve("expected/checkpoints").resolve(name)
                     .resolve("expected_dequant.safetensors"));
             Checkpoint source = Checkpoint.open(Fixtures.checkpoint(name))) {
            for (TensorInfo e : expected.tensors()) {
                float[] want = expected.readFloats(e.name());
                float[] got = exported.readFloats(e.name());
                for (int i = 0; i < want.length; i++) {
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]),
                            e.name() + "[" + i + "]");
                }
            }
            for (TensorInfo t : exported.tensors()) {
                assertEquals(QuantKind.PLAIN, t.kind(), t.name());
                assertEquals(DType.F32, t.dtype(), t.name());
                if (!source.tensor(t.name()).isQuantized()) {
                    float[] want = source.readFloats(t.name());
                    float[] got = exported.readFloats(t.name());
                    assertEquals(want.length, got.length);
                    for (int i = 0; i < want.length; i++) {
                        assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), t.name());
                    }
                }
            }
            Map<String, Object> cfg = exported.config().orElseThrow();
            assertFalse(cfg.containsKey("quantization_config"));
            assertEquals("float32", cfg.getOrDefault("torch_dtype", cfg.get("dtype")));
        }
        assertTrue(Manifest.verify(out).isEmpty(), () -> Manifest.verify(out).toString());
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(List.of(out), s.toList(), "no temporary directory left beside the output");
        }
    }
}

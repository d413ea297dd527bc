package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.export.Manifest;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Exports with each fixture adapter match PEFT's merge: F32 within 1e-6 of expected_merged_f32, F16 within one ulp of
 * expected_merged_f16 (both made by PEFT's own code).
 */
class MergedExportConformanceTest {
    @TempDir
    Path tmp;

    static List<String> pairs() {
        return Fixtures.mergePairs();
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void f32WithinOneMillionthAndF16WithinOneUlp(String pair) {
        String checkpoint = pair.substring(0, pair.indexOf("__"));
        String adapter = pair.substring(pair.indexOf("__") + 2);
        Path dir = Fixtures.root().resolve("expected/merged").resolve(pair);
        Path out32 = tmp.resolve("f32");
        Path out16 = tmp.resolve("f16");
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(checkpoint));
             LoraAdapter a = LoraAdapter.open(Fixtures.adapter(adapter))) {
            ExportResult r = Export.of(c).adapter(a).dtype(DType.F32).to(out32);
            assertTrue(r.stats().stream().anyMatch(s -> s.mergeSteps() > 0));
            for (TensorStats s : r.stats()) {
                if (s.mergeSteps() > 0) {
                    assertTrue(s.maxAbsDelta() > 0 && s.relDeltaNorm() > 0, s.name());
                }
            }
            Export.of(c).adapter(a).dtype(DType.F16).to(out16);
        }
        double maxDiff = 0;
        long f16Differ = 0;
        try (Checkpoint e32 = Checkpoint.open(dir.resolve("expected_merged_f32.safetensors"));
             Checkpoint e16 = Checkpoint.open(dir.resolve("expected_merged_f16.safetensors"));
             Checkpoint g32 = Checkpoint.open(out32);
             Checkpoint g16 = Checkpoint.open(out16);
             Arena arena = Arena.ofConfined()) {
            for (TensorInfo t : e32.tensors()) {
                float[] want = e32.readFloats(t.name());
                float[] got = g32.readFloats(t.name());
                for (int i = 0; i < want.length; i++) {
                    maxDiff = Math.max(maxDiff, Math.abs((double) want[i] - got[i]));
                }
                MemorySegment w16 = e16.rawData(t.name());
                MemorySegment g = g16.rawData(t.name());
                for (long i = 0; i < t.numel(); i++) {
                    short a = w16.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i);
                    short b = g.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i);
                    if (a != b) {
                        f16Differ++;
                        assertTrue(Math.abs(ordered(a) - ordered(b)) <= 1, t.name() + "[" + i + "] differs by more than 1 ulp");
                    }
                }
            }
        }
        System.out.printf("%s: max |f32 diff| %.3g, f16 elements differing %d%n", pair, maxDiff, f16Differ);
        assertTrue(maxDiff <= 1e-6, pair + ": max diff " + maxDiff);
        assertTrue(Manifest.verify(out32).isEmpty());
        assertEquals(List.of(), Manifest.verify(out16));
    }

    /** Maps half bits to integers in the order of the values, so adjacent values differ by 1. */
    private static int ordered(short h) {
        int v = h & 0xFFFF;
        return (v & 0x8000) != 0 ? -(v & 0x7FFF) : v;
    }
}

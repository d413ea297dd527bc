package dev.dequant4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.internal.cpu.ScalarKernels;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import dev.dequant4j.internal.lora.MergePlan;
import dev.dequant4j.internal.lora.Merging;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Collectors;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every merge pair of the fixtures (expected values made by PEFT's own code) merged with the scalar reference:
 * F32 within 1e-6 absolute of {@code expected_merged_f32}, F16 within 1 ulp of {@code expected_merged_f16}. The
 * figures are printed (see target/surefire-reports/dev.dequant4j.MergeConformanceTest-output.txt) and recorded in
 * docs/MERGE.md.
 */
class MergeConformanceTest {
    private static final ValueLayout.OfShort SHORT_LE =
            ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    /** Odd on purpose: chunks do not line up with 4-bit blocks, rows or powers of two. */
    private static final int CHUNK_ROWS = 7;

    static List<String> pairs() {
        return Fixtures.mergePairs();
    }

    static List<String> adapters() {
        return Fixtures.adapterNames();
    }

    @ParameterizedTest
    @MethodSource("pairs")
    void mergeMatchesPeft(String pair) throws IOException {
        String[] p = pair.split("__");
        Path dir = Fixtures.root().resolve("expected/merged").resolve(pair);
        JsonObject manifestPair = manifest().getObject("pairs").getObject(pair);
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint(p[0]));
             LoraAdapter lora = LoraAdapter.open(Fixtures.adapter(p[1]));
             Checkpoint f32 = Checkpoint.open(dir.resolve("expected_merged_f32.safetensors"));
             Checkpoint f16 = Checkpoint.open(dir.resolve("expected_merged_f16.safetensors"))) {
            MergePlan plan = MergePlan.build(base, List.of(lora));
            Set<String> adapted = new TreeSet<>();
            for (JsonValue v : manifestPair.getArray("adapted_modules").values()) {
                adapted.add(((dev.dequant4j.internal.json.JsonString) v).value() + ".weight");
            }
            assertEquals(adapted, new TreeSet<>(plan.tensors()), "tensors the plan changes");

            double maxDiff = 0;
            String maxAt = "";
            long f32Differing = 0;
            long f16Differing = 0;
            long elements = 0;
            for (TensorInfo t : f32.tensors()) {
                float[] want = f32.readFloats(t.name());
                float[] got = Merging.merge(base, t.name(), plan.ops(t.name()), CHUNK_ROWS);
                assertEquals(want.length, got.length, t.name());
                MemorySegment half = f16.rawData(t.name());
                for (int i = 0; i < want.length; i++) {
                    double d = Math.abs((double) want[i] - got[i]);
                    if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                        f32Differing++;
                    }
                    if (d > maxDiff) {
                        maxDiff = d;
                        maxAt = t.name() + "[" + i + "]";
                    }
                    short wantHalf = half.getAtIndex(SHORT_LE, i);
                    short gotHalf = Float.floatToFloat16(got[i]);
                    if (wantHalf != gotHalf) {
                        f16Differing++;
                        assertTrue(ulps(wantHalf, gotHalf) <= 1, t.name() + "[" + i + "]: f16 " + hex(wantHalf)
                                + " expected, " + hex(gotHalf) + " merged");
                    }
                }
                elements += want.length;
            }
            System.out.printf(Locale.ROOT, "%-40s %2d tensors %6d elements  F32: %d differ, max |diff| %.3e %s  F16:"
                    + " %d differ%n", pair, f32.tensors().size(), elements, f32Differing, maxDiff, maxAt, f16Differing);
            assertTrue(maxDiff <= 1e-6, pair + ": F32 differs by " + maxDiff + " at " + maxAt);

            Path bnbPath = dir.resolve("expected_merged_peft_bnb_path_f32.safetensors");
            if (Files.exists(bnbPath)) {
                comparePeftBnbPath(pair, base, plan, f32, bnbPath);
            }
        }
    }

    /**
     * PEFT's own 4-bit merge adds the delta to the dequantized weight rounded to the checkpoint dtype (bf16); ours adds
     * it to the fp32 dequant. Rounding our base the same way first must reproduce PEFT's value.
     */
    private static void comparePeftBnbPath(String pair, Checkpoint base, MergePlan plan, Checkpoint f32, Path file) {
        try (Checkpoint bnb = Checkpoint.open(file)) {
            double faithfulVsBnb = 0;
            double roundedVsBnb = 0;
            for (TensorInfo t : f32.tensors()) {
                float[] want = bnb.readFloats(t.name());
                float[] faithful = Merging.merge(base, t.name(), plan.ops(t.name()), CHUNK_ROWS);
                float[] rounded = Merging.merge(base, t.name(), plan.ops(t.name()), CHUNK_ROWS, w -> {
                    float[] r = new float[w.length];
                    for (int i = 0; i < w.length; i++) {
                        r[i] = Float.intBitsToFloat(ScalarKernels.toBf16(w[i]) << 16);
                    }
                    return r;
                });
                for (int i = 0; i < want.length; i++) {
                    faithfulVsBnb = Math.max(faithfulVsBnb, Math.abs((double) want[i] - faithful[i]));
                    roundedVsBnb = Math.max(roundedVsBnb, Math.abs((double) want[i] - rounded[i]));
                }
            }
            System.out.printf(Locale.ROOT, "%-40s vs PEFT bnb path: QLoRA-faithful max |diff| %.3e, with the base"
                    + " rounded to bf16 first %.3e%n", pair, faithfulVsBnb, roundedVsBnb);
            assertTrue(roundedVsBnb <= 1e-6, pair + ": bf16-rounded base differs from PEFT's bnb path by "
                    + roundedVsBnb);
            assertTrue(faithfulVsBnb > 1e-5, "the QLoRA-faithful merge should differ from PEFT's bnb path");
        }
    }

    @ParameterizedTest
    @MethodSource("adapters")
    void perModuleRankAlphaScalingMatchPeft(String name) throws IOException {
        JsonObject perModule = manifest().getObject("adapters").getObject(name).getObject("per_module");
        try (LoraAdapter lora = LoraAdapter.open(Fixtures.adapter(name))) {
            Set<String> modules = lora.modules().stream().map(LoraAdapter.Module::module).collect(Collectors.toSet());
            assertEquals(perModule.keys(), modules, name + " modules");
            for (LoraAdapter.Module m : lora.modules()) {
                JsonObject want = perModule.getObject(m.module());
                assertEquals(want.getLong("r"), m.r(), m.module() + " r");
                assertEquals(want.getDouble("lora_alpha"), m.alpha(), m.module() + " alpha");
                assertEquals((float) want.getDouble("scaling"), m.scaling(), m.module() + " scaling");
                assertEquals(LoraAdapter.Kind.LINEAR, m.kind(), m.module());
            }
            assertEquals(List.of(), lora.warnings(), name + " warnings");
        }
    }

    private static JsonObject manifest() throws IOException {
        return Json.readObject(Fixtures.root().resolve("manifest.json"), 10_000_000);
    }

    /** Distance in representable fp16 values (same sign: difference of the bit patterns). */
    static int ulps(short a, short b) {
        int x = a & 0xFFFF;
        int y = b & 0xFFFF;
        int ox = (x & 0x8000) != 0 ? -(x & 0x7FFF) : x;
        int oy = (y & 0x8000) != 0 ? -(y & 0x7FFF) : y;
        return Math.abs(ox - oy);
    }

    private static String hex(short h) {
        return String.format(Locale.ROOT, "0x%04x", h & 0xFFFF);
    }
}

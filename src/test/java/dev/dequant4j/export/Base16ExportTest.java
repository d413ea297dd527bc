package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.export.Manifest;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --base16}: the adapter is merged into the original 16-bit weights (as Unsloth's merged_16bit does), checked
 * against a merge computed here in double precision from the original weights and the adapter's A and B.
 */
class Base16ExportTest {
    @TempDir
    Path tmp;

    private static final Path ORIGINAL = Fixtures.root().resolve("expected/models/llama-h64-bf16");

    @Test
    void mergesIntoTheOriginalWeights() throws Exception {
        Path out = tmp.resolve("out");
        try (Checkpoint q = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Checkpoint original = Checkpoint.open(ORIGINAL);
             LoraAdapter a = LoraAdapter.open(Fixtures.adapter("h64-lora-r8"))) {
            Export.of(q).base16(original).adapter(a).dtype(DType.F32).to(out);
        }
        double scaling = 16.0 / 8;
        double maxDiff = 0;
        try (Checkpoint original = Checkpoint.open(ORIGINAL);
             Checkpoint adapter = Checkpoint.open(Fixtures.adapter("h64-lora-r8").resolve("adapter_model.safetensors"));
             Checkpoint merged = Checkpoint.open(out)) {
            for (TensorInfo t : original.tensors()) {
                float[] w = original.readFloats(t.name());
                float[] got = merged.readFloats(t.name());
                String module = t.name().substring(0, t.name().length() - ".weight".length());
                String key = "base_model.model." + module + ".lora_A.weight";
                if (adapter.find(key).isEmpty()) {
                    for (int i = 0; i < w.length; i++) {
                        assertEquals(Float.floatToRawIntBits(w[i]), Float.floatToRawIntBits(got[i]), t.name());
                    }
                    continue;
                }
                float[] aw = adapter.readFloats(key);
                float[] bw = adapter.readFloats("base_model.model." + module + ".lora_B.weight");
                long[] shape = t.shape();
                int out0 = (int) shape[0];
                int in = (int) shape[1];
                int r = aw.length / in;
                for (int o = 0; o < out0; o++) {
                    for (int i = 0; i < in; i++) {
                        double d = 0;
                        for (int k = 0; k < r; k++) {
                            d += (double) bw[o * r + k] * aw[k * in + i];
                        }
                        double want = w[o * in + i] + scaling * d;
                        maxDiff = Math.max(maxDiff, Math.abs(want - got[o * in + i]));
                    }
                }
            }
        }
        assertTrue(maxDiff < 1e-6, "max |difference| " + maxDiff);
        JsonObject manifest = Json.readObject(out.resolve(Manifest.FILE_NAME), 1 << 22);
        assertEquals("base16", manifest.getObject("options").getString("merge_base"));
        assertEquals(List.of(), Manifest.verify(out));
    }

    @Test
    void aBase16ThatIsNotTheOriginalIsRefusedBeforeWriting() throws Exception {
        try (Checkpoint q = Checkpoint.open(Fixtures.checkpoint("llama-h48-fp16-nf4-dq"));
             Checkpoint original = Checkpoint.open(ORIGINAL)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(q).base16(original).to(tmp.resolve("out")));
            assertTrue(e.getMessage().startsWith(ORIGINAL + ": "), e.getMessage());
        }
        assertFalse(java.nio.file.Files.exists(tmp.resolve("out")));
    }
}

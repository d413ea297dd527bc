package dev.dequant4j.internal.cuda;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.lora.MergeOp;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Shared pieces of the GPU tests: the probe's answer (see {@link GpuCondition}) and fixture adapters as steps. */
final class Gpu {
    private Gpu() {}

    static final CudaBackend.Availability AVAILABILITY = CudaBackend.probe();

    /**
     * Whether the device is the host emulation of the kernels (native/emu, the cuda profile's gpu-emulated tests):
     * every kernel instruction runs on one CPU core there, so the largest cases use smaller shapes.
     */
    static final boolean EMULATED = AVAILABILITY.usable() && AVAILABILITY.device().contains("host emulation");

    static Map<String, LogicalTensor> tensors(Checkpoint c) {
        return Internals.checkpoint().logical(c);
    }

    /**
     * The LoRA (or DoRA) steps of a fixture adapter, by base tensor name: {@code left = lora_B}, {@code right =
     * lora_A}, scale {@code lora_alpha / r} (or {@code / sqrt(r)} with rsLoRA; rank and alpha patterns are not
     * resolved: for a GPU-versus-CPU comparison any scale will do).
     */
    static Map<String, MergeOp> adapterSteps(String adapter) {
        Path dir = Fixtures.adapter(adapter);
        JsonObject config;
        try {
            config = Json.readObject(dir.resolve("adapter_config.json"), 1 << 20);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        double alpha = config.getDouble("lora_alpha");
        boolean rslora = config.getBoolean("use_rslora", false);
        Map<String, MergeOp> out = new LinkedHashMap<>();
        try (Checkpoint a = Checkpoint.open(dir.resolve("adapter_model.safetensors"))) {
            List<String> names = new ArrayList<>(tensors(a).keySet());
            for (String key : names) {
                if (!key.endsWith(".lora_A.weight")) {
                    continue;
                }
                String module = key.substring("base_model.model.".length(), key.length() - ".lora_A.weight".length());
                String prefix = key.substring(0, key.length() - ".lora_A.weight".length());
                float[] right = a.readFloats(key);
                float[] left = a.readFloats(prefix + ".lora_B.weight");
                int r = (int) a.tensor(key).shape()[0];
                float scale = (float) (rslora ? alpha / Math.sqrt(r) : alpha / r);
                String magnitude = prefix + ".lora_magnitude_vector";
                MergeOp op = names.contains(magnitude)
                        ? new MergeOp.Dora(adapter, left, right, r, scale, a.readFloats(magnitude), false)
                        : new MergeOp.Lora(adapter, left, right, r, scale);
                out.put(module + ".weight", op);
            }
        }
        return out;
    }
}

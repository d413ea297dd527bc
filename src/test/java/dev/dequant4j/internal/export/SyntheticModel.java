package dev.dequant4j.internal.export;

import dev.dequant4j.DType;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Writes small model directories with plain BF16 tensors of chosen sizes, for export tests. */
public final class SyntheticModel {
    private SyntheticModel() {}

    /** A model dir with {@code n} BF16 tensors of {@code rows x cols} random values, plus config and tokenizer. */
    public static Path write(Path dir, int n, int rows, int cols, String configJson) throws IOException {
        long x = 0x9E3779B97F4A7C15L;
        List<SafetensorsWriter.TensorData> tensors = new ArrayList<>();
        Arena arena = Arena.ofAuto();
        for (int i = 0; i < n; i++) {
            MemorySegment seg = arena.allocate((long) rows * cols * 2);
            for (long k = 0; k < (long) rows * cols; k++) {
                x ^= x << 13;
                x ^= x >>> 7;
                x ^= x << 17;
                // uniform in [-0.05, 0.05): small weights of either sign
                float v = ((x >>> 40) / (float) (1 << 24) - 0.5f) * 0.1f;
                seg.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, k, (short) (Float.floatToRawIntBits(v) >>> 16));
            }
            tensors.add(new SafetensorsWriter.TensorData(new ShardedLayout.Spec("model.layers." + i + ".mlp.w.weight",
                    DType.BF16, new long[] {rows, cols}), seg));
        }
        SafetensorsWriter.write(dir, tensors, Long.MAX_VALUE, false);
        Files.writeString(dir.resolve("config.json"), configJson);
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"model_max_length\": 128}\n");
        Files.writeString(dir.resolve("chat_template.jinja"), "{{ messages }}\n");
        return dir;
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A tensor larger than the whole heap exports under a small -Xmx: it is processed in chunks, never held whole. */
class LowMemoryExportTest {
    @TempDir
    Path tmp;

    @Test
    void tensorLargerThanTheHeapExportsUnder128MegabytesOfHeap() throws Exception {
        // One BF16 tensor of 80 M elements: 160 MB stored, 320 MB as F32 output, against a 128 MB heap.
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 10_000, 8_000, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process child = new ProcessBuilder(java, "-Xmx128m", "--enable-native-access=ALL-UNNAMED",
                "--add-modules=jdk.incubator.vector", "-cp", System.getProperty("java.class.path"),
                "dev.dequant4j.cli.Main", "export", model.toString(), "--out", out.toString(), "--dtype", "f32",
                "--memory", "64MiB")
                .redirectErrorStream(true).redirectOutput(tmp.resolve("child.log").toFile()).start();
        assertTrue(child.waitFor(120, TimeUnit.SECONDS), "export did not finish");
        assertEquals(0, child.exitValue(), Files.readString(tmp.resolve("child.log")));
        assertEquals(List.of(), Manifest.verify(out));
        try (Checkpoint src = Checkpoint.open(model); Checkpoint e = Checkpoint.open(out)) {
            String name = "model.layers.0.mlp.w.weight";
            float[] a = new float[1 << 16];
            float[] b = new float[1 << 16];
            for (long off : new long[] {0, 40_000_000, 80_000_000 - (1 << 16)}) {
                src.readFloats(name, off, a, 0, a.length);
                e.readFloats(name, off, b, 0, b.length);
                for (int i = 0; i < a.length; i++) {
                    assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), "element " + (off + i));
                }
            }
        }
    }
}

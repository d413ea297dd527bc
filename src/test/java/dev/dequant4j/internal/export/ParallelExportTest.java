package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Exports running at the same time in one JVM (issue 6): from one shared Checkpoint and from separate ones, to
 * different targets, in different dtypes. Every output verifies against its manifest and holds the same values as
 * an export run alone.
 */
class ParallelExportTest {
    @TempDir
    Path tmp;

    @Test
    void fourExportsAtOnceFromOneSharedCheckpointAndTwoOthers() throws Exception {
        List<Path> outs = new ArrayList<>();
        try (Checkpoint shared = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Checkpoint mixed = Checkpoint.open(Fixtures.checkpoint("llama-h64-mixed"));
             Checkpoint int8 = Checkpoint.open(Fixtures.checkpoint("llama-h64-int8"));
             ExecutorService pool = Executors.newFixedThreadPool(4)) {
            record Job(Checkpoint c, DType dtype, Path out) {}
            List<Job> jobs = List.of(new Job(shared, DType.F32, tmp.resolve("a")),
                    new Job(shared, DType.BF16, tmp.resolve("b")), new Job(mixed, DType.F16, tmp.resolve("c")),
                    new Job(int8, DType.F32, tmp.resolve("d")));
            List<Future<?>> running = new ArrayList<>();
            for (Job j : jobs) {
                running.add(pool.submit(() -> Export.of(j.c()).dtype(j.dtype()).threads(2).to(j.out())));
                outs.add(j.out());
            }
            for (Future<?> f : running) {
                f.get();
            }
            for (Path out : outs) {
                assertEquals(List.of(), Manifest.verify(out), out.toString());
            }
            // the same values as the source read directly (F32 output of the 4-bit and int8 checkpoints)
            for (int i : new int[] {0, 3}) {
                try (Checkpoint written = Checkpoint.open(outs.get(i))) {
                    Checkpoint source = jobs.get(i).c();
                    for (TensorInfo t : source.tensors()) {
                        assertArrayEquals(source.readFloats(t.name()), written.readFloats(t.name()), t.name());
                    }
                }
            }
        }
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A failure in any pipeline thread (a worker, a writer, a hasher) cancels the whole export promptly: the other
 * threads stop (none waits for a buffer that will never come back), the temporary directory is removed, and the
 * caller gets the one-line error. Issue 12 item 3: a worker's failure left a surviving worker blocked on the buffer
 * pool and the caller in {@code Thread.join} for ever. Each kind is injected at a random unit, 50 times, after a
 * short delay (as a large unit takes) and with a deadline, so a hang fails the test instead of stalling the build.
 */
class PipelineFailureTest {
    static final int ITERATIONS = 50;
    static final int TENSORS = 40;

    @TempDir
    Path tmp;

    private Path model;
    private Path work;

    /** Forty 64x64 tensors: forty units (more than the buffer pool of 4 workers holds), one shard. */
    @BeforeEach
    void model() throws IOException {
        model = SyntheticModel.write(tmp.resolve("model"), TENSORS, 64, 64, "{\"torch_dtype\": \"bfloat16\"}");
        work = Files.createDirectory(tmp.resolve("work"));
    }

    @AfterEach
    void unhook() {
        OrderedWriter.faultHook = null;
    }

    @ParameterizedTest
    @ValueSource(strings = {"worker", "writer", "hasher"})
    void aFailureInAnyThreadCancelsTheExport(String kind) throws IOException {
        Random rnd = new Random(kind.hashCode());
        for (int i = 0; i < ITERATIONS; i++) {
            int failAt = rnd.nextInt(TENSORS);
            AtomicInteger calls = new AtomicInteger();
            OrderedWriter.faultHook = thread -> {
                if (thread.equals(kind) && calls.getAndIncrement() == failAt) {
                    // slow, as a large tensor is: the other threads meanwhile take every free buffer and wait
                    sleep(20);
                    throw new IllegalStateException("injected " + kind + " failure");
                }
            };
            Path out = work.resolve("out");
            Dequant4jException e = assertTimeoutPreemptively(Duration.ofSeconds(20),
                    () -> assertThrows(Dequant4jException.class, () -> export(out)),
                    kind + " failure at unit " + failAt + " (iteration " + i + ") hangs the export");
            assertEquals(1, e.getMessage().lines().count(), e.getMessage());
            assertTrue(e.getMessage().contains("injected " + kind + " failure"), e.getMessage());
            try (Stream<Path> s = Files.list(work)) {
                assertEquals(List.of(), s.toList(), "nothing is left beside the target: " + e.getMessage());
            }
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void export(Path out) {
        try (Checkpoint c = Checkpoint.open(model)) {
            Exporter.run(new Exporter.Request(c, null, List.of(), DType.F16, Backend.CPU, 0, 4, 4 << 20, null, out,
                    false, false, null));
        }
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.Export;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A SIGKILLed export leaves the target untouched and a temporary directory the next run removes; an interrupted
 * (Ctrl-C, SIGINT) export removes its temporary directory itself.
 */
class KilledExportTest {
    @TempDir
    Path tmp;

    private List<Path> temporaries() throws Exception {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.filter(p -> p.getFileName().toString().startsWith(".out.dequant4j-tmp-")).toList();
        }
    }

    /** Starts an export of a 96 MB model in a child JVM and waits until it is writing its output. */
    private Process startWritingChild(Path model, Path out) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process child = new ProcessBuilder(java, "--enable-native-access=ALL-UNNAMED", "-cp",
                System.getProperty("java.class.path"), "dev.dequant4j.cli.Main", "export", model.toString(),
                "--out", out.toString(), "--dtype", "f32", "--threads", "1", "--memory", "4MiB")
                .redirectErrorStream(true).redirectOutput(tmp.resolve("child.log").toFile()).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        boolean writing = false;
        while (System.nanoTime() < deadline && child.isAlive() && !writing) {
            for (Path t : temporaries()) {
                try (Stream<Path> s = Files.list(t)) {
                    writing = s.anyMatch(p -> p.toFile().length() > (8 << 20));
                } catch (java.nio.file.NoSuchFileException ignored) {
                    // gone between listing and reading
                }
            }
            Thread.sleep(20);
        }
        assertTrue(writing, "the child should be writing before it is stopped: "
                + Files.readString(tmp.resolve("child.log")));
        return child;
    }

    @Test
    void interruptedChildRemovesItsTemporaryDirectory() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 48, 1024, 1024, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        Process child = startWritingChild(model, out);
        Process kill = new ProcessBuilder("kill", "-INT", Long.toString(child.pid())).start();
        assertEquals(0, kill.waitFor());
        assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        assertFalse(Files.exists(out), "the target must not appear");
        assertEquals(List.of(), temporaries(), "Ctrl-C removes the temporary directory");
    }

    @Test
    void killedChildLeavesTargetUntouchedAndNextRunSucceeds() throws Exception {
        Path model = SyntheticModel.write(tmp.resolve("m"), 48, 1024, 1024, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = tmp.resolve("out");
        Process child = startWritingChild(model, out);
        child.destroyForcibly();
        assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        assertFalse(Files.exists(out), "the target must not appear");
        assertEquals(1, temporaries().size(), "the killed run leaves only its recognisable temporary directory");

        try (Checkpoint c = Checkpoint.open(model)) {
            Export.of(c).to(out);
        }
        assertTrue(Manifest.verify(out).isEmpty());
        assertEquals(List.of(), temporaries(), "the next run removed the stale temporary directory");
    }
}

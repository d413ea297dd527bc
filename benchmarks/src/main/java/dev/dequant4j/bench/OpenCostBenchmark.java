package dev.dequant4j.bench;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Opening costs time in proportion to the header, not the data: files with byte-identical header lengths (padded)
 * and the same tensor names, one with a 16 GiB data section (sparse, never read) and one with 16 bytes per tensor.
 * Two header sizes show the proportionality to the header.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
public class OpenCostBenchmark {
    static final long LARGE_DATA = 16L << 30;

    @Param({"1000", "10000"})
    public int tensors;

    @Param({"16GiB", "tiny"})
    public String data;

    private Path dir;
    private Path file;

    @Setup(Level.Trial)
    public void setup() throws IOException {
        long largeCols = LARGE_DATA / tensors / 2 / 1024;
        byte[] large = BenchFiles.header(tensors, 1024, largeCols, 0);
        // both headers padded to the same length, a little above the longer one
        int len = large.length + 64;
        boolean big = data.equals("16GiB");
        byte[] header = big ? BenchFiles.header(tensors, 1024, largeCols, len) : BenchFiles.header(tensors, 1, 8, len);
        long dataBytes = big ? (long) tensors * 1024 * largeCols * 2 : (long) tensors * 16;
        dir = Files.createTempDirectory("dequant4j-open");
        file = BenchFiles.sparse(dir.resolve("model.safetensors"), header, dataBytes);
        System.out.println("header " + header.length + " bytes, file " + Files.size(file) + " bytes");
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        BenchFiles.delete(file);
        Files.delete(dir);
    }

    /** The container alone: map, parse, validate. */
    @Benchmark
    public int safetensorsOpen() {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            return f.tensors().size();
        }
    }

    /** The public API: also groups tensors into logical tensors (no quantized ones here). */
    @Benchmark
    public int checkpointOpen() {
        try (Checkpoint c = Checkpoint.open(dir)) {
            return c.tensors().size();
        }
    }
}

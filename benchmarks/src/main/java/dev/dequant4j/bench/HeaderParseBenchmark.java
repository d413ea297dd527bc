package dev.dequant4j.bench;

import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonReader;
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
 * Parsing a safetensors header of Llama-style tensor entries: the full validated open of a file whose data section
 * is sparse, the generic JSON tree parse of the same bytes, and a skip-only pass (the tokenizer alone). 10,000
 * tensors is a 1.1 MB header; 850,000 is 98.7 MB, just under the safetensors limit of 100,000,000 bytes.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx6g"})
public class HeaderParseBenchmark {
    @Param({"10000"})
    public int tensors;

    private Path file;
    private byte[] header;

    @Setup(Level.Trial)
    public void setup() throws IOException {
        header = BenchFiles.header(tensors, 64, 64, 0);
        file = BenchFiles.sparse(Files.createTempFile("dequant4j-header", ".safetensors"), header,
                (long) tensors * 64 * 64 * 2);
        System.out.println("header: " + header.length + " bytes");
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        BenchFiles.delete(file);
    }

    /** Map, parse and validate (offsets tile the data, shapes match sizes, no duplicates). */
    @Benchmark
    public int openAndValidate() {
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            return f.tensors().size();
        }
    }

    /** The same bytes as a generic JSON tree (objects in key order, numbers exact). */
    @Benchmark
    public Object jsonTree() {
        return Json.parse(header);
    }

    /** Tokenizing and checking the whole document without building anything. */
    @Benchmark
    public long jsonSkip() {
        JsonReader r = new JsonReader(header);
        r.skipValue();
        r.endDocument();
        return r.offset();
    }
}

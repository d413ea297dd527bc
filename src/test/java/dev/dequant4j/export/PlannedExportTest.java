package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.PlannedExport;
import dev.dequant4j.TensorStats;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@link Export#plan}: what {@link Export#to} then writes, the same checks, and nothing on disk. */
class PlannedExportTest {
    @TempDir
    Path tmp;

    private List<Path> entries() throws Exception {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.sorted().toList();
        }
    }

    @Test
    void thePlanIsWhatTheExportWritesAndWritesNothing() throws Exception {
        Path out = tmp.resolve("new/out");
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter lora = LoraAdapter.open(Fixtures.adapter("h64-lora-r8"))) {
            Export e = Export.of(base).adapter(lora).backend(Backend.CPU).maxShardBytes(100_000);
            PlannedExport p = e.plan(out);
            assertEquals(List.of(), entries(), "no output, parent or temporary directory");
            assertEquals(out.toAbsolutePath(), p.directory());
            assertEquals(Backend.CPU, p.backend());

            ExportResult r = e.to(out);
            assertEquals(r.tensors(), p.tensors().size());
            assertEquals(r.bytes(), p.bytes());
            assertEquals(r.dtype(), p.dtype());
            List<Path> shards = r.files().stream().filter(f -> f.toString().endsWith(".safetensors")).toList();
            assertEquals(shards.size(), p.shards().size());
            long sum = 0;
            for (int i = 0; i < shards.size(); i++) {
                assertEquals(shards.get(i).getFileName().toString(), p.shards().get(i).file());
                assertEquals(Files.size(shards.get(i)), p.shards().get(i).bytes());
                sum += p.shards().get(i).bytes();
            }
            assertEquals(p.bytes(), sum);
            for (int i = 0; i < r.stats().size(); i++) {
                TensorStats s = r.stats().get(i);
                PlannedExport.Tensor t = p.tensors().get(i);
                assertEquals(s.name(), t.name());
                assertEquals(s.sourceKind(), t.sourceKind());
                assertEquals(s.dtype(), t.dtype());
                assertArrayEquals(s.shape(), t.shape());
                assertEquals(s.mergeSteps(), t.mergeSteps());
            }
            assertEquals(p.tensors().stream().mapToInt(PlannedExport.Tensor::mergeSteps).sum(), p.merges().size());
            assertEquals(lora.directory(), p.merges().getFirst().adapter());
        }
    }

    @Test
    void theChecksAreTheExportsOwn() throws Exception {
        Path exists = Files.createDirectories(tmp.resolve("exists"));
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             LoraAdapter other = LoraAdapter.open(Fixtures.adapter("h48-lora-r4"))) {
            Dequant4jException planned = assertThrows(Dequant4jException.class, () -> Export.of(base).plan(exists));
            assertEquals(Dequant4jException.Kind.OUTPUT_EXISTS, planned.kind());
            assertEquals(assertThrows(Dequant4jException.class, () -> Export.of(base).to(exists)).getMessage(),
                    planned.getMessage());
            assertEquals(1, Export.of(base).overwrite(true).plan(exists).shards().size(), "replaced, in one shard");

            Path into = tmp.resolve("x");
            Dequant4jException mismatch = assertThrows(Dequant4jException.class,
                    () -> Export.of(base).adapter(other).plan(into));
            assertEquals(Dequant4jException.Kind.ADAPTER_MISMATCH, mismatch.kind());
            assertEquals(assertThrows(Dequant4jException.class, () -> Export.of(base).adapter(other).to(into))
                    .getMessage(), mismatch.getMessage());
        }
        Path m = Files.createDirectories(tmp.resolve("m"));
        try (Stream<Path> files = Files.list(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            for (Path f : files.toList()) {
                Files.copy(f, m.resolve(f.getFileName().toString()));
            }
        }
        try (Checkpoint copy = Checkpoint.open(m)) {
            Dequant4jException intoInput = assertThrows(Dequant4jException.class,
                    () -> Export.of(copy).overwrite(true).plan(tmp.resolve("m")));
            assertEquals(assertThrows(Dequant4jException.class, () -> Export.of(copy).overwrite(true)
                    .to(tmp.resolve("m"))).getMessage(), intoInput.getMessage());
        }
        assertEquals(List.of(exists, tmp.resolve("m")), entries(), "nothing else appeared");
    }
}

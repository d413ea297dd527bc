package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.OutputFormat;
import dev.dequant4j.PlannedExport;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.gguf.GgufFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

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

    /**
     * A GGUF plan is the file the export then writes: every tensor's name, type, ne, bytes and file, every file's
     * name and size, in order; the plan itself leaves nothing on disk.
     */
    @ParameterizedTest
    @CsvSource({"F16, 0", "F16, 100000", "Q4_K_M, 0"})
    void aGgufPlanIsTheFileTheExportWrites(GgufFileType type, long maxShard) throws Exception {
        Path model = GgufExportTest.modelWithTokenizer(tmp.resolve("model"));
        Path out = tmp.resolve("new/out");
        try (Checkpoint base = Checkpoint.open(model);
             LoraAdapter lora = LoraAdapter.open(Fixtures.real().resolve("adapter-llama-lora"))) {
            Export e = Export.of(base).adapter(lora).format(OutputFormat.GGUF).ggufType(type).threads(2);
            if (maxShard > 0) {
                e.maxShardBytes(maxShard);
            }
            PlannedExport p = e.plan(out);
            assertEquals(List.of(tmp.resolve("model")), entries(), "no output, parent or temporary directory");
            assertEquals(OutputFormat.GGUF, p.format());
            assertEquals(type, p.ggufType());
            assertEquals(Backend.CPU, p.backend());
            assertEquals(maxShard > 0 ? 3 : 1, p.shards().size());
            assertEquals(p.tensors().stream().mapToInt(PlannedExport.Tensor::mergeSteps).sum(), p.merges().size());

            ExportResult r = e.to(out);
            assertEquals(r.bytes(), p.bytes());
            assertEquals(r.dtype(), p.dtype());
            assertEquals(r.tensors(), p.tensors().size());
            List<PlannedExport.Tensor> written = new ArrayList<>();
            long sum = 0;
            for (PlannedExport.Shard s : p.shards()) {
                Path file = out.resolve(s.file());
                assertEquals(Files.size(file), s.bytes(), s.file());
                sum += s.bytes();
                try (GgufFile f = GgufFile.open(file)) {
                    assertEquals(s.tensors(), f.tensors().size());
                    for (GgufFile.Tensor t : f.tensors().values()) {
                        written.add(new PlannedExport.Tensor(t.name(), null, null, new long[0], 0, s.file(),
                                t.type().name(), t.byteSize()));
                        assertArrayEquals(t.ne(), p.tensors().get(written.size() - 1).ne(), t.name());
                    }
                }
            }
            assertEquals(p.bytes(), sum);
            assertEquals(r.files().size() - 1, p.shards().size(), "the files and the manifest");
            assertEquals(written.size(), p.tensors().size());
            for (int i = 0; i < written.size(); i++) {
                PlannedExport.Tensor w = written.get(i);
                PlannedExport.Tensor t = p.tensors().get(i);
                assertEquals(List.of(w.name(), w.type(), w.bytes(), w.file()),
                        List.of(t.name(), t.type(), t.bytes(), t.file()));
                TensorStats s = r.stats().get(i);
                assertEquals(List.of(s.name(), s.sourceKind(), s.dtype(), s.mergeSteps()),
                        List.of(t.name(), t.sourceKind(), t.dtype(), t.mergeSteps()));
                assertArrayEquals(s.shape(), t.shape());
            }
            // rows of 64 are not whole K blocks: QuantMix falls back per tensor, as llama-quantize does
            assertEquals(type == GgufFileType.Q4_K_M ? List.of("F32", "Q5_0", "Q8_0") : List.of("F16", "F32"),
                    p.tensors().stream().map(PlannedExport.Tensor::type).distinct().sorted().toList());
        }
    }

    /** A GGUF plan fails where the GGUF export fails, with the same message, and leaves nothing behind. */
    @Test
    void aGgufPlanChecksAsTheGgufExportDoes() throws Exception {
        Path out = tmp.resolve("out");
        for (String model : new String[] {"llama-nf4-dq", "mixtral-nf4-dq"}) {
            try (Checkpoint base = Checkpoint.open(Fixtures.real().resolve(model))) {
                Export e = Export.of(base).format(OutputFormat.GGUF);
                Dequant4jException planned = assertThrows(Dequant4jException.class, () -> e.plan(out));
                Dequant4jException exported = assertThrows(Dequant4jException.class, () -> e.to(out));
                assertEquals(exported.getMessage(), planned.getMessage());
                assertEquals(exported.kind(), planned.kind());
                assertTrue(planned.getMessage().contains(model.startsWith("llama") ? "no tokenizer.json or"
                        + " tokenizer.model" : "MixtralForCausalLM cannot be exported as GGUF"), planned.getMessage());
            }
        }
        Path exists = Files.createDirectories(tmp.resolve("exists"));
        try (Checkpoint base = Checkpoint.open(GgufExportTest.modelWithTokenizer(tmp.resolve("model")))) {
            Export e = Export.of(base).format(OutputFormat.GGUF);
            Dequant4jException planned = assertThrows(Dequant4jException.class, () -> e.plan(exists));
            assertEquals(Dequant4jException.Kind.OUTPUT_EXISTS, planned.kind());
            assertEquals(assertThrows(Dequant4jException.class, () -> e.to(exists)).getMessage(),
                    planned.getMessage());
        }
        assertEquals(List.of(exists, tmp.resolve("model")), entries(), "nothing else appeared");
    }
}

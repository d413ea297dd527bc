package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.ProcessMemory;
import dev.dequant4j.ProgressListener;
import dev.dequant4j.internal.Internals;
import dev.dequant4j.internal.bnb.FourBitTensor;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.lora.TestFiles;
import dev.dequant4j.internal.safetensors.StagedReads;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The read-ahead loads exactly the stored bytes each unit reads, and the pages of finished units leave the process:
 * the part of the mapped input resident in an export stays within its memory budget, whatever the input's size. A
 * cold input is read with direct I/O into a staging ring, which the workers read instead of the mapping, to the same
 * output bytes.
 */
class ReadAheadTest {
    @TempDir
    Path tmp;

    @Test
    void theRangesOfAllUnitsTileEachStoredComponentOnce() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            List<ExportPlan.OutputTensor> tensors = new ArrayList<>();
            for (LogicalTensor t : Internals.checkpoint().logical(c).values()) {
                tensors.add(new ExportPlan.OutputTensor(t.name(), t, 0, DType.F16, t.shape(), false, false, false));
            }
            // units of 2 KiB of output: 1024 elements, a few 64-element blocks each
            ExportPlan plan = ExportPlan.build(tensors, Long.MAX_VALUE, 2048, 1);
            int fourBit = 0;
            for (int ti = 0; ti < tensors.size(); ti++) {
                ExportPlan.OutputTensor t = tensors.get(ti);
                List<List<ReadAhead.Range>> perUnit = new ArrayList<>();
                for (ExportPlan.Unit u : plan.units()) {
                    if (u.tensorIndex() == ti) {
                        perUnit.add(ReadAhead.ranges(t, u));
                    }
                }
                int components = t.source() instanceof FourBitTensor ? 2 : 1;
                fourBit += components - 1;
                for (int k = 0; k < components; k++) {
                    long end = 0;
                    var ref = perUnit.getFirst().get(k).ref();
                    for (List<ReadAhead.Range> r : perUnit) {
                        ReadAhead.Range x = r.get(k);
                        assertEquals(ref, x.ref());
                        // no gap; neighbouring units share at most the byte or the scale where they meet
                        assertTrue(x.offset() <= end && x.offset() >= end - 4, t.name() + ": " + x + " after " + end);
                        end = x.offset() + x.length();
                    }
                    assertEquals(ref.entry().byteSize(), end, t.name() + " component " + k + " covered to its end");
                }
            }
            assertTrue(fourBit > 0, "the fixture has 4-bit weights");
        }
    }

    @Test
    void aFourBitUnitLoadsItsPackedBytesAndTheScalesOfItsBlocks() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            FourBitTensor f = Internals.checkpoint().logical(c).values().stream()
                    .filter(FourBitTensor.class::isInstance).map(FourBitTensor.class::cast).findFirst().orElseThrow();
            var t = new ExportPlan.OutputTensor(f.name(), f, 0, DType.F16, f.shape(), false, false, false);
            int bs = f.blocksize();
            // elements [bs + 1, 3 bs + 1): packed bytes [bs / 2, 3 bs / 2 + 1), blocks 1 to 3
            var u = new ExportPlan.Unit(0, 0, bs + 1, 2L * bs, 0, 0, 4L * bs, false);
            List<ReadAhead.Range> r = ReadAhead.ranges(t, u);
            assertEquals(List.of(new ReadAhead.Range(f.weight(), bs / 2, bs + 1),
                    new ReadAhead.Range(f.absmax(), 1, 3)), r);
        }
    }

    @Test
    void theResidentPartOfTheMappedInputStaysWithinTheBudget() throws IOException {
        assumeTrue(ProcessMemory.available(), "needs Linux's /proc/self/smaps");
        // 96 MB of BF16 in one file, exported to F32 (192 MB) under a 32 MiB budget
        Path model = SyntheticModel.write(tmp.resolve("m"), 3, 4_000, 4_000, "{\"torch_dtype\": \"bfloat16\"}");
        Path file = model.resolve("model.safetensors");
        long budget = 32L << 20;
        AtomicLong peak = new AtomicLong();
        try (Checkpoint c = Checkpoint.open(model)) {
            ProgressListener sample = new ProgressListener() {
                @Override
                public void onBytes(long bytesDone) {
                    peak.accumulateAndGet(ProcessMemory.residentBytes(file), Math::max);
                }
            };
            Export.of(c).dtype(DType.F32).threads(2).memoryBudget(budget).progress(sample).to(tmp.resolve("out"));
            long after = ProcessMemory.residentBytes(file);
            assertTrue(peak.get() > 0, "sampled while the export ran");
            assertTrue(peak.get() <= budget, "resident input " + peak.get() + " bytes at the peak, budget " + budget);
            assertTrue(after <= 1 << 20, "resident input after the export: " + after + " bytes");
        }
        assertEquals(List.of(), Manifest.verify(tmp.resolve("out")));
        try (Checkpoint src = Checkpoint.open(model); Checkpoint out = Checkpoint.open(tmp.resolve("out"))) {
            float[] a = new float[4_000];
            float[] b = new float[4_000];
            src.readFloats("model.layers.2.mlp.w.weight", 15_996_000, a, 0, a.length);
            out.readFloats("model.layers.2.mlp.w.weight", 15_996_000, b, 0, b.length);
            assertArrayEquals(a, b);
        }
    }

    @Test
    void readingAheadFillsThePageCacheWithoutMappingIntoTheProcess() throws IOException {
        assumeTrue(ProcessMemory.available(), "needs Linux's /proc/self/smaps");
        Path model = SyntheticModel.write(tmp.resolve("m"), 1, 2_000, 2_000, "{\"torch_dtype\": \"bfloat16\"}");
        Path file = model.resolve("model.safetensors");
        try (Checkpoint c = Checkpoint.open(model); FileChannel ch = FileChannel.open(file)) {
            TensorStore.Ref ref = Internals.checkpoint().store(c).get("model.layers.0.mlp.w.weight");
            long size = ref.entry().byteSize();
            long header = ProcessMemory.residentBytes(file);
            assertTrue(ref.prefetch(0, size, ch, ByteBuffer.allocateDirect(1 << 20)));
            // the file was just written, so its pages are cached already; prefetch maps none of them either way
            assertEquals(header, ProcessMemory.residentBytes(file), "prefetched bytes are not mapped into the process");
            // against load, which maps them
            assertTrue(ref.load(0, size));
            assertTrue(ProcessMemory.residentBytes(file) >= size, ProcessMemory.residentBytes(file) + " of " + size);
            ref.unload(0, size);
        }
    }

    @Test
    void theAdaptersPagesLeaveTheProcessOnceCopied() throws IOException {
        assumeTrue(ProcessMemory.available(), "needs Linux's /proc/self/smaps");
        Path model = SyntheticModel.write(tmp.resolve("m"), 3, 2_000, 2_000, "{\"torch_dtype\": \"bfloat16\"}");
        List<TestFiles.T> factors = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            String m = "model.layers." + i + ".mlp.w.";
            factors.add(TestFiles.random(m + "lora_A.weight", DType.F32, new long[] {64, 2_000}, i, 0.01));
            factors.add(TestFiles.random(m + "lora_B.weight", DType.F32, new long[] {2_000, 64}, 10 + i, 0.01));
        }
        Path adapter = TestFiles.adapter(tmp.resolve("a"), TestFiles.config(64, 64, "target_modules", List.of("w")),
                factors);
        Path file = adapter.resolve("adapter_model.safetensors");
        try (Checkpoint c = Checkpoint.open(model); LoraAdapter a = LoraAdapter.open(adapter)) {
            Export.of(c).adapter(a).dtype(DType.F16).threads(2).to(tmp.resolve("out"));
            long resident = ProcessMemory.residentBytes(file);
            // every byte was read; the kernel maps up to 64 KiB around each page fault, so a little stays
            assertTrue(resident < Files.size(file) / 3, "resident adapter after the export: " + resident
                    + " of " + Files.size(file) + " bytes");
        }
        assertEquals(List.of(), Manifest.verify(tmp.resolve("out")));
    }

    @Test
    void stagedBytesAreReadInsteadOfTheMappingWhereTheyCoverTheWholeRead() {
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
             Arena arena = Arena.ofConfined()) {
            FourBitTensor f = Internals.checkpoint().logical(c).values().stream()
                    .filter(FourBitTensor.class::isInstance).map(FourBitTensor.class::cast).findFirst().orElseThrow();
            TensorStore.Ref w = f.weight();
            byte[] mapped = new byte[40];
            w.copyBytes(0, mapped, 0, 40);
            byte[] scales = new byte[4];
            f.absmax().copyBytes(0, scales, 0, 4);
            MemorySegment staged = arena.allocate(32).fill((byte) 0x5A);
            byte[] got = new byte[16];
            StagedReads.set(List.of(new StagedReads.Piece(w, 4, staged)));
            try {
                w.copyBytes(8, got, 0, 16);
                byte[] expected = new byte[16];
                java.util.Arrays.fill(expected, (byte) 0x5A);
                assertArrayEquals(expected, got, "bytes [8, 24) come from the piece covering [4, 36)");
                byte[] wider = new byte[40];
                w.copyBytes(0, wider, 0, 40);
                assertArrayEquals(mapped, wider, "a read the piece covers only in part goes to the mapping");
                byte[] other = new byte[4];
                f.absmax().copyBytes(0, other, 0, 4);
                assertArrayEquals(scales, other, "another tensor's reads are not affected");
            } finally {
                StagedReads.clear();
            }
            w.copyBytes(8, got, 0, 16);
            assertArrayEquals(java.util.Arrays.copyOfRange(mapped, 8, 24), got, "cleared: the mapping again");
        }
    }

    @Test
    void exportsReadingStagedInputWriteTheSameBytes() throws IOException {
        for (String pair : List.of("llama-h64-fp4-dq__h64-lora-r8", "llama-h64-int8__h64-dora-qv",
                "llama-h48-fp16-nf4-dq__h48-lora-r4")) {
            String[] p = pair.split("__");
            Map<String, byte[]> mapped = exportFixture(p[0], p[1], false, tmp.resolve(pair + "-mapped"));
            Map<String, byte[]> staged = exportFixture(p[0], p[1], true, tmp.resolve(pair + "-staged"));
            assertEquals(mapped.keySet(), staged.keySet(), pair);
            for (String name : mapped.keySet()) {
                assertArrayEquals(mapped.get(name), staged.get(name), pair + ": " + name);
            }
        }
    }

    private static Map<String, byte[]> exportFixture(String model, String adapter, boolean stage, Path out)
            throws IOException {
        ReadAhead.stageCached = stage;
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint(model));
             LoraAdapter a = LoraAdapter.open(Fixtures.adapter(adapter))) {
            Export.of(c).adapter(a).dtype(DType.F16).threads(2).to(out);
        } finally {
            ReadAhead.stageCached = false;
        }
        Map<String, byte[]> files = new TreeMap<>();
        try (var s = Files.list(out)) {
            for (Path f : s.filter(x -> x.toString().endsWith(".safetensors")).toList()) {
                files.put(f.getFileName().toString(), Files.readAllBytes(f));
            }
        }
        return files;
    }

    @Test
    void aStagedInputIsReadThroughTheRingAndNeverMapped() throws IOException {
        // 96 MB of BF16 through a 4 MiB ring (32 MiB budget): every unit's input, 2.7 MB, wraps the ring around
        Path model = SyntheticModel.write(tmp.resolve("m"), 3, 4_000, 4_000, "{\"torch_dtype\": \"bfloat16\"}");
        long peak = stagedExport(model, () -> {});
        assertTrue(peak <= 256 << 10, "resident input mapping " + peak + " bytes at the peak: staged units are not"
                + " read through the mapping");
        assertSameWeights(model, 3, 4_000);
    }

    @Test
    void withoutDirectIoTheMappingIsReadInstead() throws IOException {
        // as on a file system that refuses O_DIRECT: -Ddequant4j.directIO=false turns it off for reads and writes
        Path model = SyntheticModel.write(tmp.resolve("m"), 2, 3_000, 3_000, "{\"torch_dtype\": \"bfloat16\"}");
        String before = System.getProperty("dequant4j.directIO");
        System.setProperty("dequant4j.directIO", "false");
        long peak;
        try {
            peak = stagedExport(model, () -> {});
        } finally {
            if (before == null) {
                System.clearProperty("dequant4j.directIO");
            } else {
                System.setProperty("dequant4j.directIO", before);
            }
        }
        assertTrue(peak > 256 << 10, "the workers read the mapping: " + peak + " bytes resident");
        assertSameWeights(model, 2, 3_000);
    }

    /**
     * Direct I/O opens the input again by its path. A download that replaced the file after it was opened, with one
     * of the same size and header, must not be read: the export is of the file that was opened.
     */
    @Test
    void aPathReplacedAfterOpeningIsNotReadWithDirectIo() throws IOException {
        Path model = SyntheticModel.write(tmp.resolve("m"), 2, 3_000, 3_000, "{\"torch_dtype\": \"bfloat16\"}");
        Path original = SyntheticModel.write(tmp.resolve("original"), 2, 3_000, 3_000, "{}");
        Path file = model.resolve("model.safetensors");
        stagedExport(model, () -> {
            byte[] bytes = Files.readAllBytes(file);
            long dataStart = 8 + ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
            java.util.Arrays.fill(bytes, (int) dataStart, bytes.length, (byte) 0x3F);
            Path next = Files.write(tmp.resolve("download.tmp"), bytes);
            Files.move(next, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        });
        assertSameWeights(original, 2, 3_000);
    }

    /**
     * Exports {@code model} to tmp/out as F32 under a 32 MiB budget (a 4 MiB ring) with every range staged, after
     * {@code afterOpen} ran on the opened checkpoint; returns the peak Rss of the mapped input during the export.
     */
    private long stagedExport(Path model, IoAction afterOpen) throws IOException {
        assumeTrue(ProcessMemory.available(), "needs Linux's /proc/self/smaps");
        Path file = model.resolve("model.safetensors");
        AtomicLong peak = new AtomicLong();
        ReadAhead.stageCached = true;
        try (Checkpoint c = Checkpoint.open(model)) {
            afterOpen.run();
            ProgressListener sample = new ProgressListener() {
                @Override
                public void onBytes(long bytesDone) {
                    peak.accumulateAndGet(ProcessMemory.residentBytes(file), Math::max);
                }
            };
            Export.of(c).dtype(DType.F32).threads(2).memoryBudget(32L << 20).progress(sample).to(tmp.resolve("out"));
        } finally {
            ReadAhead.stageCached = false;
        }
        assertEquals(List.of(), Manifest.verify(tmp.resolve("out")));
        return peak.get();
    }

    private interface IoAction {
        void run() throws IOException;
    }

    /** Every {@code n x n} weight of the {@code layers}-layer {@code model} is in tmp/out, value for value. */
    private void assertSameWeights(Path model, int layers, int n) {
        try (Checkpoint src = Checkpoint.open(model); Checkpoint out = Checkpoint.open(tmp.resolve("out"))) {
            float[] a = new float[n * n];
            float[] b = new float[a.length];
            for (int i = 0; i < layers; i++) {
                String name = "model.layers." + i + ".mlp.w.weight";
                src.readFloats(name, 0, a, 0, a.length);
                out.readFloats(name, 0, b, 0, b.length);
                assertArrayEquals(a, b, name);
            }
        }
    }
}

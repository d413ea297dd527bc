package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.ProgressListener;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Several shards written and hashed at once (one lane per four workers, at least two from two workers on): the plan's
 * dispatch order keeps every lane in file order, and the files, hashes and progress are the same whatever the number
 * of lanes.
 */
class ExportLanesTest {
    @TempDir
    Path tmp;

    private static ExportPlan plan(int lanes) {
        List<ExportPlan.OutputTensor> tensors = new ArrayList<>();
        try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"))) {
            var logical = dev.dequant4j.internal.Internals.checkpoint().logical(c);
            for (var t : logical.values()) {
                tensors.add(new ExportPlan.OutputTensor(t.name(), t, 0, DType.F16, t.shape(), false, false, false));
            }
        }
        return ExportPlan.build(tensors, 20_000, 4096, lanes);
    }

    @Test
    void eachLaneKeepsFileOrderAndTheDispatchCoversEveryUnitOnce() {
        ExportPlan one = plan(1);
        int shards = one.layout().shards().size();
        assertTrue(shards >= 5, "enough shards to deal: " + shards);
        assertEquals(1, one.lanes());
        assertEquals(one.units(), one.dispatch(), "one lane: file order, as before lanes existed");
        for (int lanes : new int[] {2, 3, shards, shards + 4}) {
            ExportPlan p = plan(lanes);
            assertEquals(Math.min(lanes, shards), p.lanes());
            assertEquals(p.units().size(), p.dispatch().size());
            assertEquals(new HashSet<>(p.units()), new HashSet<>(p.dispatch()));
            Set<Integer> seenShards = new HashSet<>();
            for (int l = 0; l < p.lanes(); l++) {
                List<Integer> mine = p.laneShards(l);
                seenShards.addAll(mine);
                List<ExportPlan.Unit> lane = p.laneUnits(l);
                for (int i = 1; i < lane.size(); i++) {
                    assertTrue(lane.get(i - 1).seq() < lane.get(i).seq(), "lane " + l + " in file order");
                }
                lane.forEach(u -> assertTrue(mine.contains(u.shard())));
                List<ExportPlan.Unit> inDispatch = p.dispatch().stream().filter(lane::contains).toList();
                assertEquals(lane, inDispatch, "the dispatch keeps lane " + l + "'s order");
            }
            assertEquals(shards, seenShards.size());
            // the lanes advance together: the first units dispatched come from every lane
            Set<Integer> firstLanes = new HashSet<>();
            for (int i = 0; i < p.lanes(); i++) {
                firstLanes.add(p.dispatch().get(i).shard() % p.lanes());
            }
            assertEquals(p.lanes(), firstLanes.size());
        }
    }

    @Test
    void theSameFilesWithOneTwoAndThreeLanes() throws Exception {
        List<Path> outs = new ArrayList<>();
        List<ExportResult> results = new ArrayList<>();
        for (int threads : new int[] {1, 8, 12}) {
            Path out = tmp.resolve("out-" + threads);
            AtomicLong lastBytes = new AtomicLong();
            AtomicInteger tensors = new AtomicInteger();
            AtomicInteger inside = new AtomicInteger();
            ProgressListener progress = new ProgressListener() {
                @Override
                public void onTensor(String name, int index, long bytesDone) {
                    assertEquals(1, inside.incrementAndGet(), "one progress call at a time");
                    tensors.incrementAndGet();
                    assertTrue(bytesDone >= lastBytes.get(), "bytes done never go back");
                    lastBytes.set(bytesDone);
                    inside.decrementAndGet();
                }
            };
            try (Checkpoint c = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4-dq"));
                 LoraAdapter l = LoraAdapter.open(Fixtures.adapter("h64-lora-r8"))) {
                results.add(Export.of(c).adapter(l).dtype(DType.BF16).threads(threads).maxShardBytes(30_000)
                        .progress(progress).to(out));
            }
            assertEquals(results.getLast().tensors(), tensors.get());
            assertEquals(List.of(), Manifest.verify(out));
            outs.add(out);
        }
        assertEquals(List.of(1, 2, 2, 2, 3), List.of(Exporter.lanes(1), Exporter.lanes(2), Exporter.lanes(7),
                Exporter.lanes(8), Exporter.lanes(12)));

        List<Path> names;
        try (var s = Files.list(outs.getFirst())) {
            names = s.map(Path::getFileName).sorted().toList();
        }
        assertTrue(names.size() > 6, "several shards: " + names);
        for (Path out : outs.subList(1, outs.size())) {
            for (Path n : names) {
                if (n.toString().equals(Manifest.FILE_NAME)) {
                    continue;
                }
                assertArrayEquals(Files.readAllBytes(outs.getFirst().resolve(n)), Files.readAllBytes(out.resolve(n)),
                        out + "/" + n);
            }
        }

        // verify hashes the shards in parallel and still names exactly the one that changed
        Path third;
        try (var s = Files.list(outs.getLast())) {
            third = s.filter(f -> f.getFileName().toString().startsWith("model-00003-of-")).findFirst().orElseThrow();
        }
        byte[] bytes = Files.readAllBytes(third);
        bytes[bytes.length - 1] ^= 1;
        Files.write(third, bytes);
        List<String> problems = Manifest.verify(outs.getLast());
        assertEquals(1, problems.size(), problems.toString());
        assertTrue(problems.getFirst().startsWith(third + ": sha256 "), problems.getFirst());
        Files.delete(third);
        assertEquals(List.of(third + ": missing"), Manifest.verify(outs.getLast()).stream()
                .filter(p -> p.startsWith(third.toString())).toList());
    }
}

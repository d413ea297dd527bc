package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.nio.file.ExtendedOpenOption;
import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.ProgressListener;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import dev.dequant4j.internal.safetensors.OutputFaults;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Export under failure injection at every stage (issue 6): opening and planning, creating each output file, each
 * write, each fsync, each rename, the small files (index, config, manifest) and the copied tokenizer files, an
 * output that appears meanwhile, and a run killed between its two renames. After every failure the target is as
 * it was, nothing else is left beside it, and the error is one line.
 */
class ExportFaultsTest {
    @TempDir
    Path tmp;

    private Path model;
    private Path work;

    /** Four 64x64 tensors written as F32 into 40 kB shards: two shards, an index, config, tokenizer files. */
    @BeforeEach
    void model() throws IOException {
        model = SyntheticModel.write(tmp.resolve("model"), 4, 64, 64, "{\"torch_dtype\": \"bfloat16\"}");
        work = Files.createDirectory(tmp.resolve("work"));
    }

    private void export(Path out, boolean overwrite, SequentialWriter.ChannelFactory channels,
                        ProgressListener progress) {
        export(out, overwrite, channels, progress, 2);
    }

    private void export(Path out, boolean overwrite, SequentialWriter.ChannelFactory channels,
                        ProgressListener progress, int threads) {
        try (Checkpoint c = Checkpoint.open(model)) {
            Exporter.run(new Exporter.Request(c, null, List.of(), DType.F32, Backend.CPU, 40_000, threads, 4 << 20,
                    progress, out, overwrite, false, channels));
        }
    }

    private List<Path> listing() throws IOException {
        try (Stream<Path> s = Files.walk(work)) {
            return s.sorted().toList();
        }
    }

    /** Runs a failing export: it must throw our one-line error and leave {@code work} exactly as it was. */
    private Dequant4jException assertFailsCleanly(Runnable export) throws IOException {
        List<Path> before = listing();
        Dequant4jException e = assertThrows(Dequant4jException.class, export::run);
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        assertEquals(before, listing(), "the target is as it was and no temporary directory is left: "
                + e.getMessage());
        return e;
    }

    /** Opens each output file through a channel that fails its {@code failWriteAt}-th write (counted in {@code writes}). */
    private static SequentialWriter.ChannelFactory channels(List<String> opened, int failOpenAt, AtomicInteger writes,
                                                            int failWriteAt) {
        return (p, options) -> {
            synchronized (opened) {
                opened.add(p.getFileName() + (options.contains(ExtendedOpenOption.DIRECT) ? " (direct)" : ""));
                if (opened.size() == failOpenAt) {
                    throw new IOException("injected open failure");
                }
            }
            return new ExportBehaviourTest.FailingChannel(FileChannel.open(p, options), writes, failWriteAt);
        };
    }

    @Test
    void everyFileCreationAndEveryWriteFailing() throws IOException {
        List<String> opened = new ArrayList<>();
        AtomicInteger writes = new AtomicInteger();
        Path baseline = work.resolve("baseline");
        export(baseline, false, channels(opened, 0, writes, Integer.MAX_VALUE), ProgressListener.NONE);
        assertEquals(List.of(), Manifest.verify(baseline));
        AtomicDirectory.deleteRecursively(baseline);
        int totalWrites = writes.get();
        assertTrue(opened.stream().map(o -> o.replace(" (direct)", "")).toList().containsAll(List.of("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                "model.safetensors.index.json", "config.json", "tokenizer_config.json", "chat_template.jinja",
                "dequant4j-manifest.json")), opened.toString());

        Path out = work.resolve("out");
        int fellBack = 0;
        for (int k = 1; k <= opened.size(); k++) {
            int at = k;
            if (opened.get(k - 1).endsWith("(direct)")) {
                // a refused direct open falls back to an ordinary one: the export succeeds, complete
                export(out, false, channels(new ArrayList<>(), at, new AtomicInteger(), Integer.MAX_VALUE),
                        ProgressListener.NONE);
                assertEquals(List.of(), Manifest.verify(out));
                AtomicDirectory.deleteRecursively(out);
                fellBack++;
                continue;
            }
            Dequant4jException e = assertFailsCleanly(() -> export(out, false,
                    channels(new ArrayList<>(), at, new AtomicInteger(), Integer.MAX_VALUE), ProgressListener.NONE));
            assertTrue(e.getMessage().contains("injected open failure"), e.getMessage());
        }
        for (int k = 1; k <= totalWrites; k++) {
            int at = k;
            Dequant4jException e = assertFailsCleanly(() -> export(out, false,
                    channels(new ArrayList<>(), 0, new AtomicInteger(), at), ProgressListener.NONE));
            assertTrue(e.getMessage().contains("No space left on device"), e.getMessage());
        }
        System.out.println("fault points: " + opened.size() + " file opens (" + fellBack
                + " direct-I/O opens that fall back), " + totalWrites + " writes: " + opened);
    }

    /** With two lanes the two shards are written by two threads at once; any write failing still fails cleanly. */
    @Test
    void everyWriteFailingWithTwoLanes() throws IOException {
        assertEquals(2, Exporter.lanes(8));
        AtomicInteger writes = new AtomicInteger();
        Path baseline = work.resolve("baseline");
        export(baseline, false, channels(new ArrayList<>(), 0, writes, Integer.MAX_VALUE), ProgressListener.NONE, 8);
        assertEquals(List.of(), Manifest.verify(baseline));
        AtomicDirectory.deleteRecursively(baseline);
        Path out = work.resolve("out");
        for (int k = 1; k <= writes.get(); k++) {
            int at = k;
            Dequant4jException e = assertFailsCleanly(() -> export(out, false,
                    channels(new ArrayList<>(), 0, new AtomicInteger(), at), ProgressListener.NONE, 8));
            assertTrue(e.getMessage().contains("No space left on device"), e.getMessage());
        }
    }

    @Test
    void everyFsyncFailing() throws IOException {
        int fsyncs;
        Path out = work.resolve("out");
        try (OutputFaults count = OutputFaults.failAt("fsync", 0)) {
            export(out, false, null, ProgressListener.NONE);
            fsyncs = count.seen().size();
        }
        AtomicDirectory.deleteRecursively(out);
        assertEquals(7, fsyncs, "two shards, index, config, two tokenizer files, manifest");
        for (int k = 1; k <= fsyncs; k++) {
            try (OutputFaults f = OutputFaults.failAt("fsync", k)) {
                Dequant4jException e = assertFailsCleanly(() -> export(out, false, null, ProgressListener.NONE));
                assertEquals(out + ": cannot move the finished output into place: injected fsync failure",
                        e.getMessage());
            }
        }
    }

    @Test
    void renameFailing() throws IOException {
        Path out = work.resolve("out");
        try (OutputFaults f = OutputFaults.failAt("rename", 1)) {
            Dequant4jException e = assertFailsCleanly(() -> export(out, false, null, ProgressListener.NONE));
            assertEquals(out + ": cannot move the finished output into place: injected rename failure",
                    e.getMessage());
        }
    }

    /**
     * Replacing an output takes two renames: the previous output aside, then the new one in. Whichever fails, the
     * previous output is where it was.
     */
    @Test
    void overwriteWhoseRenamesFail() throws IOException {
        Path out = work.resolve("out");
        Files.createDirectory(out);
        Files.writeString(out.resolve("previous.txt"), "the user's previous output");
        for (int k = 1; k <= 2; k++) {
            try (OutputFaults f = OutputFaults.failAt("rename", k)) {
                assertFailsCleanly(() -> export(out, true, null, ProgressListener.NONE));
            }
            assertEquals("the user's previous output", Files.readString(out.resolve("previous.txt")));
        }
        export(out, true, null, ProgressListener.NONE);
        assertFalse(Files.exists(out.resolve("previous.txt")));
        assertEquals(List.of(), Manifest.verify(out));
    }

    /**
     * A process killed between the two renames of an overwrite leaves the previous output aside and the new one in
     * its temporary directory; the next run puts the previous output back and removes the temporary directory.
     */
    @Test
    void killedBetweenTheTwoRenamesIsRepairedByTheNextRun() throws Exception {
        Process gone = new ProcessBuilder("true").start();
        gone.waitFor();
        long pid = gone.pid();
        Path aside = Files.createDirectory(work.resolve(".out.dequant4j-old-" + pid + "-1f"));
        Files.writeString(aside.resolve("previous.txt"), "the user's previous output");
        Path temp = Files.createDirectory(work.resolve(".out.dequant4j-tmp-" + pid + "-2e"));
        Files.writeString(temp.resolve("model.safetensors"), "half of a new output");
        Path out = work.resolve("out");
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> export(out, false, null, ProgressListener.NONE));
        assertEquals(out + ": output already exists (use Export.overwrite(true) to replace it)", e.getMessage());
        assertEquals(List.of(work, out, out.resolve("previous.txt")), listing());
        assertEquals("the user's previous output", Files.readString(out.resolve("previous.txt")));
    }

    @Test
    void outputAppearingWhileWritingIsNotReplaced() throws IOException {
        Path out = work.resolve("out");
        ProgressListener other = new ProgressListener() {
            @Override
            public void onStart(int tensors, long bytes) {
                try {
                    Files.createDirectory(out);
                    Files.writeString(out.resolve("theirs.txt"), "another program's output");
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }
        };
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> export(out, false, null, other));
        assertEquals(out + ": output appeared while writing; not replacing it", e.getMessage());
        assertEquals(List.of(work, out, out.resolve("theirs.txt")), listing());
    }

    /**
     * The source is truncated while the export reads it (the mapping stays, its pages past the new end fault): the
     * readers see the new size, or convert the fault the JDK raises, into one error; nothing is written.
     */
    @Test
    void sourceTruncatedWhileExporting() throws IOException {
        model = SyntheticModel.write(tmp.resolve("big"), 16, 256, 256, "{\"torch_dtype\": \"bfloat16\"}");
        Path weights = model.resolve("model.safetensors");
        Path out = work.resolve("out");
        ProgressListener truncateAfterTheFirstTensor = new ProgressListener() {
            @Override
            public void onTensor(String name, int index, long bytesDone) {
                if (index == 1) {
                    try (FileChannel ch = FileChannel.open(weights, java.nio.file.StandardOpenOption.WRITE)) {
                        ch.truncate(ch.size() / 2);
                    } catch (IOException e) {
                        throw new java.io.UncheckedIOException(e);
                    }
                }
            }
        };
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertFailsCleanly(() -> Exporter.run(new Exporter.Request(c, null, List.of(),
                    DType.F32, Backend.CPU, 0, 2, 4 << 20, truncateAfterTheFirstTensor, out, false, false, null)));
            assertTrue(e.getMessage().startsWith(weights + ": tensor 'model.layers."), e.getMessage());
            assertTrue(e.getMessage().contains("truncated"), e.getMessage());
        }
    }

    /** Opening and planning fail before any directory is created. */
    @Test
    void failuresBeforeWritingCreateNothing() throws IOException {
        Path out = work.resolve("out");
        Dequant4jException open = assertFailsCleanly(() -> Export.of(Checkpoint.open(work.resolve("missing")))
                .to(out));
        assertEquals(work.resolve("missing") + ": no such file or directory", open.getMessage());
        try (Checkpoint base = Checkpoint.open(Fixtures.checkpoint("llama-h64-nf4"));
             LoraAdapter wrongSize = LoraAdapter.open(Fixtures.adapter("h48-lora-r4"))) {
            Dequant4jException plan = assertFailsCleanly(() -> Export.of(base).adapter(wrongSize).to(out));
            assertTrue(plan.getMessage().contains("h48-lora-r4"), plan.getMessage());
        }
        Path file = Files.writeString(work.resolve("file"), "x");
        Dequant4jException parent = assertFailsCleanly(() -> export(file.resolve("out"), false, null,
                ProgressListener.NONE));
        assertTrue(parent.getMessage().startsWith(file + ": cannot create the output's parent directory"),
                parent.getMessage());
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Export;
import dev.dequant4j.ProgressListener;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A full disk for real: exports into a 64 MiB tmpfs mounted for the test (as root; elsewhere the test is skipped, and
 * ExportFaultsTest's failing channel covers the same path). One export is refused up front by the free-space check;
 * in the other the disk fills while it writes, and the write fails with ENOSPC.
 */
class DiskFullExportTest {
    private static final long SIZE = 64L << 20;

    @TempDir
    static Path tmp;
    private static Path disk;

    @BeforeAll
    static void mount() throws Exception {
        disk = Files.createDirectory(tmp.resolve("disk"));
        int rc;
        try {
            Process p = new ProcessBuilder("mount", "-t", "tmpfs", "-o", "size=" + SIZE, "tmpfs", disk.toString())
                    .redirectErrorStream(true).start();
            rc = p.waitFor(30, TimeUnit.SECONDS) ? p.exitValue() : -1;
        } catch (IOException e) {
            rc = -1;
        }
        Assumptions.assumeTrue(rc == 0, "cannot mount a tmpfs here (not root?)");
    }

    @AfterAll
    static void unmount() throws Exception {
        if (disk != null && Files.getFileStore(disk).type().equals("tmpfs")) {
            new ProcessBuilder("umount", disk.toString()).start().waitFor(30, TimeUnit.SECONDS);
        }
    }

    private static List<Path> listing() throws IOException {
        try (Stream<Path> s = Files.list(disk)) {
            return s.sorted().toList();
        }
    }

    @Test
    void exportLargerThanTheFreeSpaceIsRefusedUpFront() throws IOException {
        // 16 x 1 Mi elements as F32: 64 MiB of data, which with the 16 MiB margin cannot fit
        Path model = SyntheticModel.write(tmp.resolve("large"), 16, 1024, 1024, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = disk.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> Export.of(c).dtype(DType.F32).to(out));
            assertTrue(e.getMessage().startsWith(out + ": not enough free space: the export needs "), e.getMessage());
        }
        assertEquals(List.of(), listing());
    }

    @Test
    void diskFillingUpWhileWritingFailsCleanly() throws IOException {
        Path model = SyntheticModel.write(tmp.resolve("small"), 8, 512, 512, "{\"torch_dtype\": \"bfloat16\"}");
        Path out = disk.resolve("out");
        Path filler = disk.resolve("filler");
        ProgressListener anotherProgramFillsTheDisk = new ProgressListener() {
            @Override
            public void onStart(int tensors, long bytes) {
                try (FileChannel ch = FileChannel.open(filler, StandardOpenOption.CREATE_NEW,
                        StandardOpenOption.WRITE)) {
                    ByteBuffer zeros = ByteBuffer.allocate(1 << 20);
                    long leave = 2L << 20;
                    while (Files.getFileStore(disk).getUsableSpace() > leave + zeros.capacity()) {
                        ch.write(zeros.clear());
                    }
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            }
        };
        try (Checkpoint c = Checkpoint.open(model)) {
            Dequant4jException e = assertThrows(Dequant4jException.class,
                    () -> Export.of(c).dtype(DType.F32).progress(anotherProgramFillsTheDisk).to(out));
            assertTrue(e.getMessage().contains("No space left on device (disk full?)"), e.getMessage());
            assertEquals(1, e.getMessage().lines().count());
        }
        assertEquals(List.of(filler), listing(), "no output and no temporary directory");
        Files.delete(filler);
    }
}

package dev.dequant4j.internal.export;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.safetensors.SafetensorsFile;
import dev.dequant4j.internal.safetensors.SafetensorsWriter;
import dev.dequant4j.internal.safetensors.ShardIndex;
import dev.dequant4j.internal.safetensors.ShardedLayout;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The class 8, second half: a 500,000-tensor export wrote a 103 MB manifest that our own verify refused (its
 * limit was 100 MB). An index or manifest may now be 100 MB plus 8 bytes per byte of the headers beside it; these
 * tests check that an export of the entries that expand most (names of 2-byte characters, escaped 3 times over;
 * 64-dimension shapes, one dimension per indented line) stays within 8 bytes per header byte, and that the readers
 * derive their limit so.
 */
class ListingSizeTest {
    @TempDir
    Path tmp;

    /** A unique name of 2-byte UTF-8 characters (U+00C0..U+00FF) for {@code i}. */
    private static String latin(int i) {
        StringBuilder sb = new StringBuilder();
        do {
            sb.append((char) (0xC0 + i % 64));
            i /= 64;
        } while (i > 0);
        return sb.toString();
    }

    private static long headerBytes(Path dir) throws IOException {
        long n = 0;
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.filter(p -> p.toString().endsWith(".safetensors")).toList()) {
                try (SafetensorsFile f = SafetensorsFile.open(p)) {
                    n += f.dataStart() - 8;
                }
            }
        }
        return n;
    }

    @Test
    void theManifestAndIndexOfTheMostExpandingTensorsStayWithinTheBound() throws IOException {
        List<SafetensorsWriter.TensorData> tensors = new ArrayList<>();
        for (int i = 0; i < 3000; i++) {
            long[] shape = new long[i % 2 == 0 ? 64 : 1];
            Arrays.fill(shape, 1);
            ShardedLayout.Spec spec = new ShardedLayout.Spec(latin(i), DType.F16, shape);
            tensors.add(new SafetensorsWriter.TensorData(spec, MemorySegment.ofArray(new byte[2])));
        }
        Path model = tmp.resolve("model");
        SafetensorsWriter.write(model, tensors, Long.MAX_VALUE, false);
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(model)) {
            Export.of(c).maxShardBytes(1000).to(out);
        }
        long headers = headerBytes(out);
        long manifest = Files.size(out.resolve(Manifest.FILE_NAME));
        long index = Files.size(out.resolve(ShardIndex.FILE_NAME));
        assertTrue(manifest <= 8 * headers, manifest + " bytes of manifest for " + headers + " of headers");
        assertTrue(index <= 8 * headers, index + " bytes of index for " + headers + " of headers");
        assertEquals(List.of(), Manifest.verify(out));
    }

    /** A 150 MB (sparse) manifest beside a shard with a large header is read, not refused by size. */
    @Test
    void theLimitGrowsWithTheHeadersBesideTheListing() throws IOException {
        List<SafetensorsWriter.TensorData> tensors = new ArrayList<>();
        for (int i = 0; i < 20_000; i++) {
            ShardedLayout.Spec spec = new ShardedLayout.Spec(i + "n".repeat(200), DType.F16, new long[] {1});
            tensors.add(new SafetensorsWriter.TensorData(spec, MemorySegment.ofArray(new byte[2])));
        }
        Path dir = tmp.resolve("export");
        SafetensorsWriter.write(dir, tensors, Long.MAX_VALUE, false);
        Path manifest = dir.resolve(Manifest.FILE_NAME);
        assertEquals(Json.MAX_FILE_BYTES, ShardIndex.listingLimit(dir.resolve("model.safetensors")));
        try (RandomAccessFile f = new RandomAccessFile(manifest.toFile(), "rw")) {
            f.setLength(150_000_000L);
        }
        long headers = headerBytes(dir);
        assertTrue(headers > 4_000_000, "header of " + headers + " bytes");
        assertEquals(Json.MAX_FILE_BYTES + 8 * headers, ShardIndex.listingLimit(manifest));
    }
}

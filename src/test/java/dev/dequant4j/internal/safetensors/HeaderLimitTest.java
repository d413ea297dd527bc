package dev.dequant4j.internal.safetensors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.DType;
import dev.dequant4j.Dequant4jException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The class 8: an input with a 99,999,990-byte header exported into one shard with a 100,003,832-byte
 * header, which the safetensors library and our reader refuse. Shards are now planned by header bytes as well as
 * data bytes, and every planned header is read back by our reader.
 */
class HeaderLimitTest {
    /** Names of every UTF-8 length, escapes and a pair; 64-dimension shapes: entries of many sizes. */
    private static List<ShardedLayout.Spec> varied(int n) {
        String[] stems = {"layer", "é", "中文", "😀", "tab\tname\u0001", "x".repeat(200)};
        List<ShardedLayout.Spec> specs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            long[] shape = new long[i % 3 == 0 ? 64 : 2];
            Arrays.fill(shape, 1);
            shape[0] = 1 + i % 5;
            specs.add(new ShardedLayout.Spec(stems[i % stems.length] + "." + i, DType.F16, shape));
        }
        return specs;
    }

    /** The shard as a file: its header, then zeros for its data. */
    private static SafetensorsFile read(ShardedLayout.Shard s) {
        byte[] file = Arrays.copyOf(s.header(), (int) s.fileSize());
        return SafetensorsFile.parse(Path.of(s.fileName()), file);
    }

    private static long storedHeaderLength(ShardedLayout.Shard s) {
        return ByteBuffer.wrap(s.header()).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    @Test
    void everyHeaderFitsTheLimitAndShardsAreFilledUpToIt() {
        List<ShardedLayout.Spec> specs = varied(600);
        long limit = 8192;
        ShardedLayout layout = ShardedLayout.plan(specs, Long.MAX_VALUE, 64, limit);
        assertTrue(layout.shards().size() > 5, "split by header bytes: " + layout.shards().size());
        int seen = 0;
        for (ShardedLayout.Shard s : layout.shards()) {
            long n = storedHeaderLength(s);
            assertTrue(n <= limit, s.fileName() + ": " + n);
            try (SafetensorsFile f = read(s)) {
                assertEquals(s.placements().size(), f.tensors().size());
            }
            seen += s.placements().size();
        }
        for (int i = 0; i + 1 < layout.shards().size(); i++) {
            // the largest entry above is under 500 bytes: a shard closes only when the next one does not fit
            assertTrue(storedHeaderLength(layout.shards().get(i)) > limit - 500 - 64);
        }
        assertEquals(specs.size(), seen);
    }

    @Test
    void aTensorWhoseEntryAloneIsOverTheLimitIsRefusedBeforeAnythingIsWritten() {
        List<ShardedLayout.Spec> specs = List.of(new ShardedLayout.Spec("a", DType.F16, new long[] {1}),
                new ShardedLayout.Spec("n".repeat(10_000), DType.F16, new long[] {1}));
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> ShardedLayout.plan(specs, Long.MAX_VALUE, 64, 8192));
        assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, e.kind());
        assertTrue(e.getMessage().contains("over the 8192-byte limit"), e.getMessage());
    }

    /** At the real limit: 500,000 tiny tensors with long names make ~112 MB of header, planned as two readable shards. */
    @Test
    void atTheSafetensorsLimitEveryShardIsReadable() {
        List<ShardedLayout.Spec> specs = new ArrayList<>();
        String stem = ".mlp.experts.gate_proj." + "w".repeat(140);
        for (int i = 0; i < 500_000; i++) {
            specs.add(new ShardedLayout.Spec("model.layers." + i + stem, DType.F16, new long[] {1}));
        }
        ShardedLayout layout = ShardedLayout.plan(specs, 5L << 30, 64);
        assertEquals(2, layout.shards().size());
        for (ShardedLayout.Shard s : layout.shards()) {
            assertTrue(storedHeaderLength(s) <= SafetensorsFile.MAX_HEADER_BYTES);
            try (SafetensorsFile f = read(s)) {
                assertEquals(s.placements().size(), f.tensors().size());
            }
        }
        assertTrue(storedHeaderLength(layout.shards().getFirst()) > SafetensorsFile.MAX_HEADER_BYTES - 1000);
    }
}

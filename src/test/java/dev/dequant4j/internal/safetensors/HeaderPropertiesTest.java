package dev.dequant4j.internal.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.RawSafetensors;
import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.Random;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.Combinators;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.statistics.Statistics;
import net.jqwik.api.lifecycle.AfterContainer;
import net.jqwik.api.lifecycle.BeforeContainer;

/** Properties of the header validator, against an oracle written here from the specification's rules. */
class HeaderPropertiesTest {
    static Path dir;

    @BeforeContainer
    static void createDir() throws IOException {
        dir = Files.createTempDirectory("dequant4j-header-props");
    }

    @AfterContainer
    static void deleteDir() {
        AtomicDirectory.deleteRecursively(dir);
    }

    /** A table row: name, dtype name, bits per element, shape. */
    record Row(String name, String dtype, int bits, long[] shape) {
        long bytes() {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            return n * bits / 8;
        }
    }

    @Provide
    Arbitrary<List<Row>> tables() {
        Arbitrary<Integer> dtypeIndex = Arbitraries.integers().between(0, SafetensorsFileTest.SPEC_DTYPES.length - 1);
        Arbitrary<long[]> shapes = Arbitraries.longs().between(0, 5).array(long[].class).ofMaxSize(3);
        Arbitrary<Row> row = Combinators.combine(dtypeIndex, shapes).as((i, shape) -> {
            String dtype = (String) SafetensorsFileTest.SPEC_DTYPES[i][0];
            int bits = (int) SafetensorsFileTest.SPEC_DTYPES[i][1];
            long[] s = shape;
            if (bits < 8) {
                // sub-byte dtypes need a whole number of bytes: append a dimension of 8 (= 8 * bits bits)
                s = Arrays.copyOf(shape, shape.length + 1);
                s[shape.length] = 8;
            }
            return new Row("", dtype, bits, s);
        });
        return row.list().ofMaxSize(8).map(rows -> {
            List<Row> named = new ArrayList<>();
            for (int i = 0; i < rows.size(); i++) {
                Row r = rows.get(i);
                named.add(new Row("t" + i + (i % 3 == 0 ? ".\u00e9" : ""), r.dtype(), r.bits(), r.shape()));
            }
            return named;
        });
    }

    private static Path write(byte[] bytes) {
        return RawSafetensors.write(dir.resolve("f.safetensors"), bytes);
    }

    /** Any table, with header order and data order shuffled independently and optional padding, reads back exactly. */
    @Property(tries = 300)
    void validFilesReadBackExactly(@ForAll("tables") List<Row> rows, @ForAll long seed,
                                   @ForAll @IntRange(max = 70) int padding) {
        Random rnd = new Random(seed);
        List<Row> dataOrder = new ArrayList<>(rows);
        Collections.shuffle(dataOrder, rnd);
        long[] begin = new long[rows.size()];
        long at = 0;
        for (Row r : dataOrder) {
            begin[rows.indexOf(r)] = at;
            at += r.bytes();
        }
        byte[] data = new byte[(int) at];
        rnd.nextBytes(data);
        List<Integer> headerOrder = new ArrayList<>();
        for (int i = 0; i < rows.size(); i++) {
            headerOrder.add(i);
        }
        Collections.shuffle(headerOrder, rnd);
        List<String> entries = new ArrayList<>();
        for (int i : headerOrder) {
            Row r = rows.get(i);
            entries.add(RawSafetensors.entry(r.name(), r.dtype(), RawSafetensors.shape(r.shape()), begin[i],
                    begin[i] + r.bytes()));
        }
        String header = RawSafetensors.header(entries.toArray(String[]::new)) + " ".repeat(padding);
        try (SafetensorsFile sf = SafetensorsFile.open(write(RawSafetensors.file(header, data)))) {
            assertEquals(headerOrder.stream().map(i -> rows.get(i).name()).toList(), List.copyOf(sf.tensors().keySet()));
            for (int i = 0; i < rows.size(); i++) {
                Row r = rows.get(i);
                TensorEntry e = sf.get(r.name());
                assertEquals(r.dtype(), e.dtype().safetensorsName());
                assertArrayEquals(r.shape(), e.shape());
                assertEquals(begin[i], e.begin());
                assertEquals(begin[i] + r.bytes(), e.end());
                assertArrayEquals(Arrays.copyOfRange(data, (int) begin[i], (int) (begin[i] + r.bytes())),
                        sf.data(e).toArray(ValueLayout.JAVA_BYTE));
            }
        }
    }

    /**
     * Random offsets: the file opens exactly when the spec's rules hold (sizes match the shapes, and sorted by
     * offset the ranges tile the data section from 0 to its end), and otherwise fails with a Dequant4jException.
     */
    @Property(tries = 1000)
    void offsetsAreAcceptedExactlyWhenTheyTileTheData(@ForAll("tables") List<Row> rows, @ForAll long seed,
                                                       @ForAll @IntRange(max = 3) int slack) {
        Random rnd = new Random(seed);
        long total = rows.stream().mapToLong(Row::bytes).sum();
        long[][] ranges = new long[rows.size()][];
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < rows.size(); i++) {
            order.add(i);
        }
        Collections.shuffle(order, rnd);
        long at = 0;
        for (int i : order) {
            long b = at;
            long e = at + rows.get(i).bytes();
            switch (rnd.nextInt(6)) {
                case 0 -> b += rnd.nextInt(3) - 1;                // shift the start
                case 1 -> e += rnd.nextInt(3) - 1;                // shift the end
                case 2 -> { b += 2; e += 2; }                     // move the whole range
                default -> { }
            }
            ranges[i] = new long[] {b, e};
            at += rows.get(i).bytes();
        }
        long dataLen = total + (slack == 3 ? rnd.nextInt(3) - 1 : 0);
        if (dataLen < 0) {
            dataLen = 0;
        }
        boolean valid = oracle(rows, ranges, dataLen);
        Statistics.collect(valid);
        Statistics.coverage(c -> {
            c.check(true).percentage(p -> p > 10);
            c.check(false).percentage(p -> p > 10);
        });
        List<String> entries = new ArrayList<>();
        for (int i = 0; i < rows.size(); i++) {
            Row r = rows.get(i);
            entries.add(RawSafetensors.entry(r.name(), r.dtype(), RawSafetensors.shape(r.shape()), ranges[i][0],
                    ranges[i][1]));
        }
        Path f = write(RawSafetensors.file(RawSafetensors.header(entries.toArray(String[]::new)),
                new byte[(int) dataLen]));
        if (valid) {
            SafetensorsFile.open(f).close();
        } else {
            Dequant4jException e = assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(f).close());
            assertTrue(e.getMessage().startsWith(f + ": "), e.getMessage());
        }
    }

    private static boolean oracle(List<Row> rows, long[][] ranges, long dataLen) {
        List<Integer> idx = new ArrayList<>();
        for (int i = 0; i < rows.size(); i++) {
            long b = ranges[i][0];
            long e = ranges[i][1];
            if (b < 0 || e < b || e - b != rows.get(i).bytes() || e > dataLen) {
                return false;
            }
            idx.add(i);
        }
        idx.sort(Comparator.comparingLong((Integer i) -> ranges[i][0]).thenComparingLong(i -> ranges[i][1]));
        long expect = 0;
        for (int i : idx) {
            if (ranges[i][0] != expect) {
                return false;
            }
            expect = ranges[i][1];
        }
        return expect == dataLen;
    }

    @Provide
    Arbitrary<byte[]> validFiles() {
        return tables().map(rows -> {
            List<RawSafetensors.Tensor> ts = new ArrayList<>();
            for (Row r : rows) {
                ts.add(new RawSafetensors.Tensor(r.name(), r.dtype(), r.shape(), new byte[(int) r.bytes()]));
            }
            return RawSafetensors.file(ts);
        });
    }

    private static final String JSONISH = "{}[]\",:0123456789-e ";

    /** Corrupting a few bytes anywhere gives a valid file or a Dequant4jException: never another exception. */
    @Property(tries = 2000)
    void corruptedFilesFailCleanly(@ForAll("validFiles") byte[] file, @ForAll long seed) {
        Random rnd = new Random(seed);
        byte[] bad = file.clone();
        int flips = 1 + rnd.nextInt(3);
        for (int i = 0; i < flips; i++) {
            // mostly in the length prefix and header, where the validator works
            int pos = rnd.nextInt(4) == 0 ? rnd.nextInt(Math.min(8, bad.length)) : rnd.nextInt(bad.length);
            bad[pos] = rnd.nextBoolean() ? (byte) rnd.nextInt(256) : (byte) JSONISH.charAt(rnd.nextInt(JSONISH.length()));
        }
        Path f = write(bad);
        try (SafetensorsFile sf = SafetensorsFile.open(f)) {
            long covered = sf.tensors().values().stream().mapToLong(TensorEntry::byteSize).sum();
            assertEquals(sf.fileSize() - sf.dataStart(), covered, "an accepted file is tiled exactly");
            for (TensorEntry e : sf.tensors().values()) {
                assertEquals(e.dtype().byteSize(e.numel()), e.byteSize());
            }
        } catch (Dequant4jException e) {
            assertTrue(e.getMessage().startsWith(f + ": "));
            assertEquals(-1, e.getMessage().indexOf('\n'));
        }
    }

    /** Every proper prefix of a valid file is refused. */
    @Property(tries = 500)
    void everyTruncationIsRefused(@ForAll("validFiles") byte[] file, @ForAll @IntRange(min = 0, max = 1 << 20) int cut) {
        byte[] prefix = Arrays.copyOf(file, cut % file.length);
        Path f = write(prefix);
        assertThrows(Dequant4jException.class, () -> SafetensorsFile.open(f).close());
    }
}

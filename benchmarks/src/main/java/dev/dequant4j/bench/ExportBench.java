package dev.dequant4j.bench;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.internal.cpu.Kernels;
import dev.dequant4j.internal.export.SequentialWriter;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;

/**
 * End-to-end export benchmark on a generated Llama-3-8B-shaped NF4 double-quant checkpoint: wall time and peak
 * anonymous RSS of the export, against the I/O bound measured in the same run (read every input byte, then write
 * an output-sized file the way the exporter writes: its sequential, direct-I/O writer, then fsync).
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp benchmarks/target/benchmarks.jar dev.dequant4j.bench.ExportBench \
 *      --layers 2 [--rank 16 (0: no adapter)] [--runs 3] [--threads N] [--backend cpu|cuda|auto]
 *      [--max-shard-bytes 5000000000] [--work /tmp/dequant4j-bench]
 * </pre>
 */
public final class ExportBench {
    private ExportBench() {}

    public static void main(String[] args) throws Exception {
        int layers = 2;
        int rank = 16;
        int runs = 3;
        int threads = Runtime.getRuntime().availableProcessors();
        Backend backend = Backend.CPU;
        long maxShard = 5_000_000_000L;
        Path work = Path.of(System.getProperty("java.io.tmpdir"), "dequant4j-bench");
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--layers" -> layers = Integer.parseInt(args[++i]);
                case "--rank" -> rank = Integer.parseInt(args[++i]);
                case "--runs" -> runs = Integer.parseInt(args[++i]);
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                case "--backend" -> backend = Backend.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--max-shard-bytes" -> maxShard = Long.parseLong(args[++i]);
                case "--work" -> work = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Path model = work.resolve("llama3-8b-shaped-L" + layers + "-nf4-dq");
        if (!Files.exists(model.resolve("config.json"))) {
            AtomicDirectory.deleteRecursively(model);
            long t = System.nanoTime();
            SyntheticLlama.writeModel(model, layers);
            System.out.printf(Locale.ROOT, "generated %s in %.1f s%n", model, (System.nanoTime() - t) / 1e9);
        }
        Path adapter = work.resolve("lora-L" + layers + "-r" + rank);
        if (rank > 0 && !Files.exists(adapter.resolve("adapter_config.json"))) {
            AtomicDirectory.deleteRecursively(adapter);
            SyntheticLlama.writeAdapter(adapter, layers, rank);
        }
        Path out = work.resolve("out");
        System.out.println("cpu kernels: " + Kernels.describe() + "; threads " + threads + "; backend "
                + backend.name().toLowerCase(Locale.ROOT) + "; shards of at most " + maxShard + " bytes; java "
                + Runtime.version());

        long inputBytes = sizeOf(model) + (rank > 0 ? sizeOf(adapter) : 0);
        double[] walls = new double[runs];
        double[] cpus = new double[runs];
        long[] rss = new long[runs];
        var os = (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean();
        long outputBytes = 0;
        for (int run = 0; run < runs; run++) {
            AtomicDirectory.deleteRecursively(out);
            RssSampler sampler = new RssSampler();
            sampler.start();
            long cpu0 = os.getProcessCpuTime();
            long t = System.nanoTime();
            ExportResult r;
            try (Checkpoint c = Checkpoint.open(model);
                 LoraAdapter a = rank > 0 ? LoraAdapter.open(adapter) : null) {
                Export e = Export.of(c).dtype(DType.BF16).threads(threads).backend(backend).maxShardBytes(maxShard);
                if (a != null) {
                    e.adapter(a);
                }
                r = e.to(out);
            }
            walls[run] = (System.nanoTime() - t) / 1e9;
            cpus[run] = (os.getProcessCpuTime() - cpu0) / 1e9;
            rss[run] = sampler.stopAndPeak();
            outputBytes = r.bytes();
            System.out.printf(Locale.ROOT, "run %d: export %.2f s, process CPU %.2f s, peak RssAnon %d MB%n",
                    run + 1, walls[run], cpus[run], rss[run] >> 20);
        }
        AtomicDirectory.deleteRecursively(out);

        double read = readAll(model) + (rank > 0 ? readAll(adapter) : 0);
        double write = writeLike(work.resolve("io-bound.bin"), outputBytes);
        double bound = read + write;
        double median = median(walls);
        System.out.printf(Locale.ROOT, "layers %d, LoRA rank %d, input %.2f GB, output %.2f GB%n", layers, rank,
                inputBytes / 1e9, outputBytes / 1e9);
        System.out.printf(Locale.ROOT, "I/O bound: read %.2f s (%.2f GB/s) + write %.2f s (%.2f GB/s) = %.2f s%n",
                read, inputBytes / 1e9 / read, write, outputBytes / 1e9 / write, bound);
        System.out.printf(Locale.ROOT, "export: median %.2f s of %s; ratio to I/O bound %.2f; median process CPU"
                + " %.2f s; peak RssAnon max %d MB%n", median, Arrays.toString(walls), median / bound, median(cpus),
                Arrays.stream(rss).max().orElse(0) >> 20);
    }

    private static long sizeOf(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            long t = 0;
            for (Path p : s.toList()) {
                t += Files.size(p);
            }
            return t;
        }
    }

    /** Reads every file of the model once, sequentially, in 16 MiB reads. */
    static double readAll(Path dir) throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.sorted().toList();
        }
        ByteBuffer buf = ByteBuffer.allocateDirect(16 << 20);
        long t = System.nanoTime();
        for (Path p : files) {
            try (FileChannel ch = FileChannel.open(p, StandardOpenOption.READ)) {
                while (ch.read(buf.clear()) > 0) {
                    // only the time to bring the bytes in matters
                }
            }
        }
        return (System.nanoTime() - t) / 1e9;
    }

    /**
     * Writes {@code bytes} the way the exporter writes them (its {@link SequentialWriter}: direct I/O unless
     * disabled, 16 MiB appends, then fsync), then deletes the file.
     */
    static double writeLike(Path file, long bytes) throws IOException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(16 << 20, 4096);
            seg.fill((byte) 0x3C);
            long t = System.nanoTime();
            SequentialWriter w = SequentialWriter.create(file, SequentialWriter.DEFAULT_CHANNELS,
                    SequentialWriter.directByDefault());
            for (long pos = 0; pos < bytes; pos += seg.byteSize()) {
                w.write(seg.asSlice(0, Math.min(seg.byteSize(), bytes - pos)));
            }
            w.finish();
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
                ch.force(true);
            }
            double s = (System.nanoTime() - t) / 1e9;
            Files.delete(file);
            return s;
        }
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    /** Samples RssAnon of this process from /proc every 20 ms (heap, direct buffers, JIT; not the page cache). */
    static final class RssSampler extends Thread {
        private volatile boolean running = true;
        private volatile long peak;
        private final List<String> errors = new ArrayList<>();

        RssSampler() {
            setDaemon(true);
        }

        @Override
        public void run() {
            while (running) {
                try {
                    for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                        if (line.startsWith("RssAnon:")) {
                            long kb = Long.parseLong(line.replaceAll("[^0-9]", ""));
                            peak = Math.max(peak, kb * 1024);
                        }
                    }
                    Thread.sleep(20);
                } catch (IOException | InterruptedException | NumberFormatException e) {
                    errors.add(e.toString());
                    return;
                }
            }
        }

        long stopAndPeak() throws InterruptedException {
            running = false;
            join();
            if (!errors.isEmpty()) {
                throw new IllegalStateException("RSS sampling failed: " + errors);
            }
            return peak;
        }
    }
}

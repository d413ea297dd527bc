package dev.dequant4j.bench;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.GgufFileType;
import dev.dequant4j.OutputFormat;
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
 * End-to-end export benchmark on a Llama-3-8B-shaped NF4 double-quant checkpoint (generated, or given): wall time,
 * CPU time, CPU share, peak RSS and peak RssAnon of the export, against the I/O bound measured in the same run (read
 * every input byte, with direct I/O for a cold bound as the exporter's read-ahead reads a cold input, and also through
 * the page cache as a cold {@code cat} reads it, then write an output-sized file the way the exporter writes: its
 * sequential, direct-I/O writer, then fsync), both serial (read + write) and overlapped (the larger of the two).
 *
 * <p>{@code --cache cold} drops the page cache before each export and before the bound's read ({@code sync}, then
 * {@code 3} into {@code /proc/sys/vm/drop_caches}, which needs root), or, where that is refused, reads
 * {@code --evict FILE} (a file larger than the page cache can hold besides) instead; {@code --cache both} alternates a
 * cold and a warm export in each run and reports the ratio of their CPU times. {@code --cli JAR} measures what a user
 * runs, the one-shot {@code java -jar JAR export ...} under {@code /usr/bin/time}, instead of an export in this JVM;
 * {@code --launcher bin/dequant4j} the same through the launcher script (one JVM, no restart).
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp benchmarks/target/benchmarks.jar dev.dequant4j.bench.ExportBench \
 *      --layers 2 [--rank 16 (0: no adapter)] [--runs 3] [--threads N] [--backend cpu|cuda|auto]
 *      [--dtype bf16|f16|f32] [--max-shard-bytes 5000000000] [--work /tmp/dequant4j-bench]
 *      [--model DIR [--adapter DIR]] [--cache warm|cold|both] [--evict FILE] [--cli target/dequant4j-cli.jar]
 *      [--launcher bin/dequant4j] [--gguf f16|q4_k_m|... --tokenizer DIR]
 * </pre>
 */
public final class ExportBench {
    private ExportBench() {}

    /** One export: seconds of wall and CPU time, bytes of peak RSS and RssAnon (0 where unknown). */
    record Run(double wall, double cpu, long rss, long rssAnon, long outputBytes) {
        double share() {
            return cpu / wall;
        }
    }

    /** What an export run needs. */
    record Setup(Path model, Path adapter, Path out, DType dtype, int threads, Backend backend, long maxShard,
                 Path cli, Path launcher, GgufFileType gguf) {}

    public static void main(String[] args) throws Exception {
        int layers = 2;
        int rank = 16;
        int runs = 3;
        int threads = Runtime.getRuntime().availableProcessors();
        Backend backend = Backend.CPU;
        DType dtype = DType.BF16;
        long maxShard = 5_000_000_000L;
        Path work = Path.of(System.getProperty("java.io.tmpdir"), "dequant4j-bench");
        Path model = null;
        Path adapter = null;
        String cache = "warm";
        Path evict = null;
        Path cli = null;
        Path launcher = null;
        GgufFileType gguf = null;
        Path tokenizer = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--layers" -> layers = Integer.parseInt(args[++i]);
                case "--rank" -> rank = Integer.parseInt(args[++i]);
                case "--runs" -> runs = Integer.parseInt(args[++i]);
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                case "--backend" -> backend = Backend.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--dtype" -> dtype = DType.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--max-shard-bytes" -> maxShard = Long.parseLong(args[++i]);
                case "--work" -> work = Path.of(args[++i]);
                case "--model" -> model = Path.of(args[++i]);
                case "--adapter" -> adapter = Path.of(args[++i]);
                case "--cache" -> cache = args[++i];
                case "--evict" -> evict = Path.of(args[++i]);
                case "--cli" -> cli = Path.of(args[++i]);
                case "--launcher" -> launcher = Path.of(args[++i]);
                case "--gguf" -> gguf = GgufFileType.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--tokenizer" -> tokenizer = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (!List.of("warm", "cold", "both").contains(cache)) {
            throw new IllegalArgumentException("--cache must be warm, cold or both");
        }
        if (model == null) {
            model = work.resolve("llama3-8b-shaped-L" + layers + "-nf4-dq");
            if (!Files.exists(model.resolve("config.json"))) {
                AtomicDirectory.deleteRecursively(model);
                long t = System.nanoTime();
                SyntheticLlama.writeModel(model, layers);
                System.out.printf(Locale.ROOT, "generated %s in %.1f s%n", model, (System.nanoTime() - t) / 1e9);
            }
            if (rank > 0) {
                adapter = work.resolve("lora-L" + layers + "-r" + rank);
                if (!Files.exists(adapter.resolve("adapter_config.json"))) {
                    AtomicDirectory.deleteRecursively(adapter);
                    SyntheticLlama.writeAdapter(adapter, layers, rank);
                }
            }
        }
        if (tokenizer != null) {
            // a GGUF export needs a vocabulary: a small tokenizer's files, padded to the model's vocab_size
            try (var files = Files.list(tokenizer)) {
                for (Path f : files.toList()) {
                    Files.copy(f, model.resolve(f.getFileName()), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                }
            }
        }
        Setup setup = new Setup(model, adapter, work.resolve("out"), dtype, threads, backend, maxShard, cli,
                launcher, gguf);
        Cache dropper = new Cache(evict, List.of(model, adapter == null ? model : adapter));
        System.out.println("cpu kernels: " + Kernels.describe() + "; threads " + threads + "; backend "
                + backend.name().toLowerCase(Locale.ROOT) + "; dtype " + dtype
                + (gguf != null ? "; GGUF " + gguf : "") + "; shards of at most " + maxShard
                + " bytes; java " + Runtime.version() + "; " + (launcher != null ? "one-shot " + launcher
                : cli != null ? "one-shot java -jar " + cli : "in this JVM")
                + "; cache " + cache);

        long inputBytes = sizeOf(model) + (adapter != null ? sizeOf(adapter) : 0);
        List<Run> cold = new ArrayList<>();
        List<Run> warm = new ArrayList<>();
        for (int run = 0; run < runs; run++) {
            if (!cache.equals("warm")) {
                dropper.drop();
                cold.add(report("cold", run, export(setup)));
            }
            if (!cache.equals("cold")) {
                readAll(model, false);
                if (adapter != null) {
                    readAll(adapter, false);
                }
                warm.add(report("warm", run, export(setup)));
            }
        }
        AtomicDirectory.deleteRecursively(setup.out());
        long outputBytes = (cold.isEmpty() ? warm : cold).getFirst().outputBytes();

        boolean coldBound = !cache.equals("warm");
        if (coldBound) {
            dropper.drop();
        }
        double read = readAll(model, coldBound) + (adapter != null ? readAll(adapter, coldBound) : 0);
        // the definition of the cold bound: a cold `cat` of the inputs, through the page cache
        double cachedRead = Double.NaN;
        if (coldBound) {
            dropper.drop();
            cachedRead = readAll(model, false) + (adapter != null ? readAll(adapter, false) : 0);
        }
        double write = writeLike(work.resolve("io-bound.bin"), outputBytes);
        System.out.printf(Locale.ROOT, "input %.2f GB, output %.2f GB; load average %s%n", inputBytes / 1e9,
                outputBytes / 1e9, loadAverage());
        System.out.printf(Locale.ROOT, "I/O bound (%s read): read %.2f s (%.2f GB/s) + write %.2f s (%.2f GB/s):"
                + " serial %.2f s, overlapped %.2f s%n", coldBound ? "cold, direct" : "warm", read,
                inputBytes / 1e9 / read, write, outputBytes / 1e9 / write, read + write, Math.max(read, write));
        if (coldBound) {
            System.out.printf(Locale.ROOT, "I/O bound (cold read through the page cache, as cat): read %.2f s"
                    + " (%.2f GB/s) + the same write: serial %.2f s, overlapped %.2f s%n", cachedRead,
                    inputBytes / 1e9 / cachedRead, cachedRead + write, Math.max(cachedRead, write));
        }
        for (List<Run> rs : List.of(cold, warm)) {
            if (rs.isEmpty()) {
                continue;
            }
            double wall = median(rs.stream().mapToDouble(Run::wall).toArray());
            String ratios = String.format(Locale.ROOT, "%.2fx serial, %.2fx overlapped bound", wall / (read + write),
                    wall / Math.max(read, write));
            if (coldBound) {
                ratios += String.format(Locale.ROOT, "; %.2fx serial, %.2fx overlapped with the page-cache read",
                        wall / (cachedRead + write), wall / Math.max(cachedRead, write));
            }
            System.out.printf(Locale.ROOT, "%s export: median wall %.2f s (%s),"
                    + " CPU %.2f s, CPU share %.0f %%, peak RSS %d MB, peak RssAnon %d MB (of %d runs)%n",
                    rs == cold ? "cold" : "warm", wall, ratios,
                    median(rs.stream().mapToDouble(Run::cpu).toArray()),
                    100 * median(rs.stream().mapToDouble(Run::share).toArray()),
                    rs.stream().mapToLong(Run::rss).max().orElse(0) >> 20,
                    rs.stream().mapToLong(Run::rssAnon).max().orElse(0) >> 20, rs.size());
        }
        if (!cold.isEmpty() && !warm.isEmpty()) {
            System.out.printf(Locale.ROOT, "CPU time cold / warm: %.2f (medians)%n",
                    median(cold.stream().mapToDouble(Run::cpu).toArray())
                            / median(warm.stream().mapToDouble(Run::cpu).toArray()));
        }
    }

    private static Run report(String what, int run, Run r) {
        System.out.printf(Locale.ROOT, "run %d %s: wall %.2f s, CPU %.2f s (%.0f %%), peak RSS %d MB, peak RssAnon"
                + " %d MB; load average %s%n", run + 1, what, r.wall(), r.cpu(), 100 * r.share(), r.rss() >> 20,
                r.rssAnon() >> 20, loadAverage());
        return r;
    }

    private static Run export(Setup s) throws Exception {
        AtomicDirectory.deleteRecursively(s.out());
        return s.cli() == null && s.launcher() == null ? exportHere(s) : exportOneShot(s);
    }

    /** An export in this JVM; RSS and RssAnon are sampled peaks of this process. */
    private static Run exportHere(Setup s) throws Exception {
        var os = (com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean();
        RssSampler sampler = new RssSampler(ProcessHandle.current());
        sampler.start();
        long cpu0 = os.getProcessCpuTime();
        long t = System.nanoTime();
        ExportResult r;
        try (Checkpoint c = Checkpoint.open(s.model());
             LoraAdapter a = s.adapter() != null ? LoraAdapter.open(s.adapter()) : null) {
            Export e = Export.of(c).dtype(s.dtype()).threads(s.threads()).backend(s.backend());
            if (s.gguf() != null) {
                e.format(OutputFormat.GGUF).ggufType(s.gguf());
            } else {
                e.maxShardBytes(s.maxShard());
            }
            if (a != null) {
                e.adapter(a);
            }
            r = e.to(s.out());
        }
        double wall = (System.nanoTime() - t) / 1e9;
        double cpu = (os.getProcessCpuTime() - cpu0) / 1e9;
        sampler.stopAndPeak();
        return new Run(wall, cpu, sampler.peakRss, sampler.peakAnon, r.bytes());
    }

    /**
     * {@code java -jar JAR export ...} (or the launcher script) under {@code /usr/bin/time}: its wall, user + system
     * time and maximum RSS (of the largest process: {@code java -jar} restarts itself with the Vector API), and the
     * peak RssAnon of the process tree.
     */
    private static Run exportOneShot(Setup s) throws Exception {
        Path times = Files.createTempFile("export-time", ".txt");
        List<String> cmd = new ArrayList<>(List.of("/usr/bin/time", "-f", "%e %U %S %M", "-o", times.toString()));
        if (s.launcher() != null) {
            cmd.addAll(List.of("bash", s.launcher().toString()));
        } else {
            cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-jar",
                    s.cli().toString()));
        }
        cmd.addAll(List.of("export", s.model().toString(), "--out", s.out().toString(), "--dtype",
                s.dtype().name().toLowerCase(Locale.ROOT), "--threads", String.valueOf(s.threads()), "--backend",
                s.backend().name().toLowerCase(Locale.ROOT), "--max-shard-size", String.valueOf(s.maxShard())));
        if (s.adapter() != null) {
            cmd.addAll(List.of("--adapter", s.adapter().toString()));
        }
        Path log = Files.createTempFile("export", ".log");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
        Process p = pb.start();
        RssSampler sampler = new RssSampler(p.toHandle());
        sampler.start();
        int code = p.waitFor();
        sampler.stopAndPeak();
        if (code != 0) {
            throw new IllegalStateException("export failed (" + code + "): " + Files.readString(log));
        }
        String[] f = Files.readString(times).trim().split("\\s+");
        Files.delete(times);
        Files.delete(log);
        return new Run(Double.parseDouble(f[0]), Double.parseDouble(f[1]) + Double.parseDouble(f[2]),
                Long.parseLong(f[3]) << 10, sampler.peakAnon, sizeOf(s.out()));
    }

    /** Empties the page cache of the inputs before a cold run. */
    static final class Cache {
        private final Path evict;
        private final List<Path> inputs;
        private boolean warned;

        Cache(Path evict, List<Path> inputs) {
            this.evict = evict;
            this.inputs = inputs;
        }

        void drop() throws IOException, InterruptedException {
            new ProcessBuilder("sync").inheritIO().start().waitFor();
            try {
                Files.writeString(Path.of("/proc/sys/vm/drop_caches"), "3");
                return;
            } catch (IOException e) {
                if (evict == null) {
                    throw new IOException("cannot drop the page cache (" + e + "); run as root, or pass --evict"
                            + " FILE, a file larger than the page cache can hold besides the inputs " + inputs, e);
                }
                if (!warned) {
                    System.out.println("cannot drop the page cache (" + e + "): reading " + evict + " instead");
                    warned = true;
                }
            }
            try (FileChannel ch = FileChannel.open(evict, StandardOpenOption.READ)) {
                ByteBuffer buf = ByteBuffer.allocateDirect(16 << 20);
                while (ch.read(buf.clear()) > 0) {
                    // reading pushes the inputs out of the cache
                }
            }
        }
    }

    private static String loadAverage() {
        try {
            return Files.readString(Path.of("/proc/loadavg")).split(" ")[0];
        } catch (IOException e) {
            return "unknown";
        }
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

    /** Reads every file of the model once, sequentially, in 16 MiB reads (direct I/O for a cold bound). */
    static double readAll(Path dir, boolean direct) throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.sorted().toList();
        }
        try (Arena arena = Arena.ofConfined()) {
            ByteBuffer buf = arena.allocate(16 << 20, 4096).asByteBuffer();
            long t = System.nanoTime();
            for (Path p : files) {
                try (FileChannel ch = openForBound(p, direct)) {
                    // positional reads up to the size: after the short read at the end, a direct read would fail
                    long size = ch.size();
                    for (long pos = 0; pos < size; ) {
                        int n = ch.read(buf.clear(), pos);
                        if (n <= 0) {
                            break;
                        }
                        pos += n;
                    }
                }
            }
            return (System.nanoTime() - t) / 1e9;
        }
    }

    /**
     * A cold bound reads with direct I/O where the file system allows it: the disk's own speed, as the exporter's
     * read-ahead reads a cold input (page-cache reads of a cold file cost several CPU-seconds per GB on our VMs).
     */
    private static FileChannel openForBound(Path p, boolean direct) throws IOException {
        if (direct) {
            try {
                return FileChannel.open(p, StandardOpenOption.READ, com.sun.nio.file.ExtendedOpenOption.DIRECT);
            } catch (IOException | UnsupportedOperationException e) {
                // the file system refuses direct I/O: the page cache's speed is the bound there
            }
        }
        return FileChannel.open(p, StandardOpenOption.READ);
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

    /**
     * Samples VmRSS and RssAnon (heap, direct buffers, JIT; not the page cache) of a process and its descendants from
     * /proc every 20 ms; the peaks are of their sums.
     */
    static final class RssSampler extends Thread {
        private final ProcessHandle root;
        private volatile boolean running = true;
        private volatile long peakRss;
        private volatile long peakAnon;

        RssSampler(ProcessHandle root) {
            this.root = root;
            setDaemon(true);
        }

        @Override
        public void run() {
            while (running) {
                long rss = 0;
                long anon = 0;
                List<ProcessHandle> tree = new ArrayList<>(root.descendants().toList());
                tree.add(root);
                for (ProcessHandle h : tree) {
                    try {
                        for (String line : Files.readAllLines(Path.of("/proc", String.valueOf(h.pid()), "status"))) {
                            if (line.startsWith("VmRSS:")) {
                                rss += Long.parseLong(line.replaceAll("[^0-9]", "")) << 10;
                            } else if (line.startsWith("RssAnon:")) {
                                anon += Long.parseLong(line.replaceAll("[^0-9]", "")) << 10;
                            }
                        }
                    } catch (IOException e) {
                        // the process ended between the listing and the read
                    }
                }
                peakRss = Math.max(peakRss, rss);
                peakAnon = Math.max(peakAnon, anon);
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }

        void stopAndPeak() throws InterruptedException {
            running = false;
            join();
        }
    }
}

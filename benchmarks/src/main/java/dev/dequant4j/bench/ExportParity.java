package dev.dequant4j.bench;

import dev.dequant4j.Backend;
import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.ExportResult;
import dev.dequant4j.LoraAdapter;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.TensorStats;
import dev.dequant4j.internal.safetensors.AtomicDirectory;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * Exports the same generated Llama-3-8B-shaped checkpoint (NF4 double quant, r-rank LoRA on every projection) on two
 * backends and compares the outputs tensor by tensor: unmerged tensors must be bit-identical, merged ones within one
 * ulp of the output dtype. Prints both wall times. Exit status 1 on any difference beyond that.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp benchmarks/target/benchmarks.jar dev.dequant4j.bench.ExportParity \
 *      [--layers 2] [--rank 16] [--dtype bf16] [--a cuda] [--b cpu] [--work DIR]
 * </pre>
 */
public final class ExportParity {
    private ExportParity() {}

    public static void main(String[] args) throws Exception {
        int layers = 2;
        int rank = 16;
        DType dtype = DType.BF16;
        Backend a = Backend.CUDA;
        Backend b = Backend.CPU;
        Path work = Path.of(System.getProperty("java.io.tmpdir"), "dequant4j-parity");
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--layers" -> layers = Integer.parseInt(args[++i]);
                case "--rank" -> rank = Integer.parseInt(args[++i]);
                case "--dtype" -> dtype = DType.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--a" -> a = Backend.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--b" -> b = Backend.valueOf(args[++i].toUpperCase(Locale.ROOT));
                case "--work" -> work = Path.of(args[++i]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        Path model = work.resolve("model-L" + layers);
        Path adapter = work.resolve("lora-L" + layers + "-r" + rank);
        if (!Files.exists(model.resolve("config.json"))) {
            AtomicDirectory.deleteRecursively(model);
            SyntheticLlama.writeModel(model, layers);
        }
        if (!Files.exists(adapter.resolve("adapter_config.json"))) {
            AtomicDirectory.deleteRecursively(adapter);
            SyntheticLlama.writeAdapter(adapter, layers, rank);
        }
        System.out.println("backend " + a + ": " + a.describe());
        System.out.println("backend " + b + ": " + b.describe());
        Path outA = work.resolve("out-" + a.name().toLowerCase(Locale.ROOT));
        Path outB = work.resolve("out-" + b.name().toLowerCase(Locale.ROOT) + "-2");
        ExportResult ra = export(model, adapter, dtype, a, outA);
        ExportResult rb = export(model, adapter, dtype, b, outB);
        System.out.printf(Locale.ROOT, "export on %s: %.2f s (%s)%nexport on %s: %.2f s (%s)%n", a,
                ra.elapsed().toNanos() / 1e9, ra.backendReason(), b, rb.elapsed().toNanos() / 1e9,
                rb.backendReason());
        Map<String, Integer> steps = ra.stats().stream().collect(Collectors.toMap(TensorStats::name,
                TensorStats::mergeSteps));
        long tensors = 0;
        long elements = 0;
        long differing = 0;
        long beyondUlp = 0;
        try (Checkpoint ca = Checkpoint.open(outA); Checkpoint cb = Checkpoint.open(outB)) {
            for (TensorInfo t : ca.tensors()) {
                MemorySegment x = ca.rawData(t.name());
                MemorySegment y = cb.rawData(t.name());
                boolean merged = steps.getOrDefault(t.name(), 0) > 0;
                long n = t.numel();
                long diff = 0;
                long far = 0;
                for (long i = 0; i < n; i++) {
                    long u = ordered(x, t.dtype(), i);
                    long v = ordered(y, t.dtype(), i);
                    if (u != v) {
                        diff++;
                        if (!merged || Math.abs(u - v) > 1) {
                            far++;
                        }
                    }
                }
                if (far > 0) {
                    System.out.println("MISMATCH " + t.name() + (merged ? " (merged)" : " (dequantized or copied)")
                            + ": " + far + " elements beyond " + (merged ? "1 ulp" : "bit equality"));
                }
                tensors++;
                elements += n;
                differing += diff;
                beyondUlp += far;
            }
        }
        System.out.printf(Locale.ROOT, "compared %d tensors, %d elements: %d differ, %d beyond tolerance%n", tensors,
                elements, differing, beyondUlp);
        AtomicDirectory.deleteRecursively(outA);
        AtomicDirectory.deleteRecursively(outB);
        System.exit(beyondUlp == 0 ? 0 : 1);
    }

    private static ExportResult export(Path model, Path adapter, DType dtype, Backend backend, Path out) {
        AtomicDirectory.deleteRecursively(out);
        try (Checkpoint c = Checkpoint.open(model); LoraAdapter l = LoraAdapter.open(adapter)) {
            return Export.of(c).adapter(l).dtype(dtype).backend(backend).to(out);
        }
    }

    /** The element's bits mapped to integers in value order, so adjacent representable values differ by 1. */
    private static long ordered(MemorySegment s, DType dtype, long i) {
        if (dtype == DType.F32) {
            int v = s.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i);
            return v < 0 ? -(long) (v & 0x7FFFFFFF) : v;
        }
        int v = s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0xFFFF;
        return (v & 0x8000) != 0 ? -(long) (v & 0x7FFF) : v;
    }
}

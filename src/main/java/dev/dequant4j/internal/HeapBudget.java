package dev.dequant4j.internal;

import dev.dequant4j.Dequant4jException;
import java.nio.file.Path;

/**
 * Refuses a parse or a plan that cannot fit in the Java heap before it allocates, with one line naming the file and
 * the heap ({@link Runtime#maxMemory()}), instead of an {@link OutOfMemoryError} minutes later. The estimates are
 * measured, not bounds (docs/RELIABILITY.md): what one misses still ends in the CLI's out-of-memory line.
 */
public final class HeapBudget {
    /**
     * Heap per byte of a safetensors header while it is parsed: the header copied once, then its entries (2.1
     * bytes per header byte retained for 1,188,630 tensors in a 99,999,990-byte header).
     */
    public static final long PER_HEADER_BYTE = 4;
    /** Heap per byte of a JSON file read whole: the bytes, then the tree (3.1 per byte for a 77 MB index). */
    public static final long PER_JSON_BYTE = 5;

    /**
     * Heap per output tensor of an export (plan, statistics, index and manifest): 171,351 tiny tensors export in a
     * 400 MiB heap but not in 256 MiB, 1,188,630 not in 2 GiB.
     */
    public static final long PER_EXPORT_TENSOR = 1792;

    private HeapBudget() {}

    /**
     * Checks that about {@code bytes} of heap can be had for {@code what} of {@code file} (null: no file).
     *
     * @throws Dequant4jException naming the file, the need and the heap, when they cannot
     */
    public static void require(Path file, String what, long bytes) {
        if (bytes <= available()) {
            return;
        }
        // garbage counts as used until a collection: collect once before refusing
        System.gc();
        long free = available();
        if (bytes <= free) {
            return;
        }
        long max = Runtime.getRuntime().maxMemory();
        throw new Dequant4jException(Dequant4jException.Kind.INVALID_REQUEST, file, what + " needs about "
                + mib(bytes) + " MiB of Java heap, and " + mib(free) + " MiB of the " + mib(max) + " MiB heap are"
                + " free; give the JVM more with -Xmx, e.g. DEQUANT4J_OPTS=-Xmx" + suggestion(bytes + max - free)
                + " bin/dequant4j ... or java -Xmx" + suggestion(bytes + max - free) + " -jar dequant4j-cli.jar ...");
    }

    private static long available() {
        Runtime r = Runtime.getRuntime();
        return r.maxMemory() - (r.totalMemory() - r.freeMemory());
    }

    private static long mib(long bytes) {
        return (bytes + (1 << 20) - 1) >> 20;
    }

    /** Whole gibibytes, with a quarter to spare. */
    private static String suggestion(long bytes) {
        return Math.max(1, (bytes + bytes / 4 + (1L << 30) - 1) >> 30) + "g";
    }
}

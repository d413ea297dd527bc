package dev.dequant4j.internal.bnb;

/**
 * The arrays a thread's chunked reads copy stored bytes into before decoding them, kept per thread and reused.
 *
 * <p>An export reads every tensor in chunks of 64 Ki elements; allocating the stored bytes of each chunk anew made
 * gigabytes of garbage per export, which let the collector grow the heap to several hundred MB of resident memory
 * (docs/BENCHMARKS.md). Reads are split into pieces of at most {@link #PIECE} elements, so each array stays below
 * a few hundred KB whatever a caller reads at once. An array is used only from the copy of stored bytes into it to
 * the decode that follows, and no read runs inside another, so nothing else in the thread is using it meanwhile.
 */
final class Scratch {
    /** Elements decoded per piece of a read. */
    static final int PIECE = 1 << 16;

    private static final ThreadLocal<Scratch> CURRENT = ThreadLocal.withInitial(Scratch::new);

    private byte[] packed = new byte[0];
    private byte[] codes = new byte[0];
    private float[] scales = new float[0];
    private float[] nested = new float[0];
    private short[] halves = new short[0];

    private Scratch() {}

    static Scratch get() {
        return CURRENT.get();
    }

    /** Packed 4-bit bytes or int8 values of one piece. */
    byte[] packed(int n) {
        if (packed.length < n) {
            packed = new byte[n];
        }
        return packed;
    }

    /** The absmax codes of a double-quantized piece. */
    byte[] codes(int n) {
        if (codes.length < n) {
            codes = new byte[n];
        }
        return codes;
    }

    /** The float32 scales of a 4-bit piece. */
    float[] scales(int n) {
        if (scales.length < n) {
            scales = new float[n];
        }
        return scales;
    }

    /** The second-level scales of a double-quantized piece. */
    float[] nested(int n) {
        if (nested.length < n) {
            nested = new float[n];
        }
        return nested;
    }

    /** 16-bit stored values of one piece. */
    short[] halves(int n) {
        if (halves.length < n) {
            halves = new short[n];
        }
        return halves;
    }

    /** The length of the piece of a read that starts at {@code start} and has {@code left} elements to go. */
    static int piece(long start, long left) {
        // Pieces end at multiples of PIECE, so 4-bit blocks (a power of two of at most PIECE) are never split.
        return (int) Math.min(left, PIECE - (start & (PIECE - 1)));
    }
}

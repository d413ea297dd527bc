package dev.dequant4j.internal.safetensors;

import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * Stored bytes read into memory ahead of their use (by the exporter's read-ahead, with direct I/O), which the reads
 * of the thread that set them take instead of the mapped file. A read that a piece does not cover whole goes to the
 * mapping as before, so a piece is only ever a faster source of the same bytes.
 */
public final class StagedReads {
    /** Bytes {@code [offset, offset + bytes.byteSize())} of {@code ref}'s tensor. */
    public record Piece(TensorStore.Ref ref, long offset, MemorySegment bytes) {}

    private static final ThreadLocal<List<Piece>> CURRENT = new ThreadLocal<>();

    private StagedReads() {}

    /** Until {@link #clear}, this thread's reads of the pieces' bytes come from them. */
    public static void set(List<Piece> pieces) {
        CURRENT.set(pieces.isEmpty() ? null : pieces);
    }

    public static void clear() {
        CURRENT.remove();
    }

    /** Bytes {@code [offset, offset + len)} of {@code ref}'s tensor from a piece of this thread, or null. */
    static MemorySegment find(TensorStore.Ref ref, long offset, long len) {
        List<Piece> pieces = CURRENT.get();
        if (pieces == null) {
            return null;
        }
        for (Piece p : pieces) {
            TensorStore.Ref r = p.ref();
            boolean same = r == ref || (r.file() == ref.file() && r.entry() == ref.entry());
            long at = offset - p.offset();
            if (same && at >= 0 && len >= 0 && at + len <= p.bytes().byteSize()) {
                return p.bytes().asSlice(at, len);
            }
        }
        return null;
    }
}

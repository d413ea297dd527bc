package dev.dequant4j;

/**
 * Hears about the progress of an export. All methods may be called from worker threads; implementations must be
 * thread-safe and quick. Returning true from {@link #isCancelled()} stops the export: nothing is left at the target.
 */
public interface ProgressListener {
    /** Before the first byte is written: the number of output tensors and of bytes to write. */
    default void onStart(int tensors, long bytes) {}

    /** A tensor was completely written ({@code index} counts completed tensors from 1; bytes written so far). */
    default void onTensor(String name, int index, long bytesDone) {}

    /** Bytes written so far (called after each written chunk that does not complete a tensor). */
    default void onBytes(long bytesDone) {}

    /** Checked between chunks; true cancels the export. */
    default boolean isCancelled() {
        return false;
    }

    /** After the output directory is complete and in place. */
    default void onDone(ExportResult result) {}

    ProgressListener NONE = new ProgressListener() {};
}

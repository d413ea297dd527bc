package dev.dequant4j;

/**
 * Hears about the progress of an export. All methods may be called from worker threads; implementations must be
 * thread-safe and quick. Returning true from {@link #isCancelled()} stops the export: nothing is left at the target.
 */
public interface ProgressListener {
    /**
     * Called once, before the first byte is written.
     *
     * @param tensors the number of output tensors
     * @param bytes the number of bytes of the safetensors files to write, headers included
     */
    default void onStart(int tensors, long bytes) {}

    /**
     * A tensor was completely written.
     *
     * @param name the tensor's output name
     * @param index the number of tensors completed so far, counting this one (from 1)
     * @param bytesDone the tensor bytes written so far
     */
    default void onTensor(String name, int index, long bytesDone) {}

    /**
     * Called after each written chunk that does not complete a tensor.
     *
     * @param bytesDone the tensor bytes written so far
     */
    default void onBytes(long bytesDone) {}

    /**
     * Checked between chunks.
     *
     * @return true to cancel the export
     */
    default boolean isCancelled() {
        return false;
    }

    /**
     * Called after the output directory is complete and in place.
     *
     * @param result what was written
     */
    default void onDone(ExportResult result) {}

    /** A listener that ignores everything and never cancels. */
    ProgressListener NONE = new ProgressListener() {};
}

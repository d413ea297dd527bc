package dev.dequant4j.internal.cuda;

import static org.bytedeco.cuda.global.cudart.cudaFree;
import static org.bytedeco.cuda.global.cudart.cudaFreeHost;
import static org.bytedeco.cuda.global.cudart.cudaHostAlloc;
import static org.bytedeco.cuda.global.cudart.cudaHostAllocDefault;
import static org.bytedeco.cuda.global.cudart.cudaMalloc;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.bytedeco.javacpp.Pointer;

/**
 * Device and pinned host allocations (through the CUDA presets), counted so that tests can check that nothing
 * leaks, and grow-only {@link Buffer}s that are reused across chunks and tensors.
 */
final class Memory implements AutoCloseable {
    private final List<Buffer> buffers = new ArrayList<>();
    private long deviceBytes;
    private long pinnedBytes;

    /** A device or pinned buffer that keeps its largest size until {@link Memory#close()}. */
    final class Buffer {
        private final boolean pinned;
        private final String what;
        private Pointer pointer;
        private long capacity;

        private Buffer(boolean pinned, String what) {
            this.pinned = pinned;
            this.what = what;
        }

        /** Makes the buffer at least {@code bytes} large; its contents are lost when it grows. */
        Buffer ensure(long bytes) {
            if (bytes <= capacity) {
                return this;
            }
            release();
            // Round up so that slowly growing tensors do not reallocate every time.
            long size = Math.max(bytes, Math.min(capacity * 2, bytes + (256L << 20)));
            size = (size + 0xFFFF) & ~0xFFFFL;
            Pointer p = new Pointer();
            int rc = pinned ? cudaHostAlloc(p, size, cudaHostAllocDefault) : cudaMalloc(p, size);
            if (rc != 0) {
                throw new Dequant4jException(Kind.BACKEND, "cannot allocate " + size(size) + " of "
                        + (pinned ? "pinned host" : "device") + " memory for " + what + ": " + DeviceCheck.error(rc));
            }
            pointer = p;
            capacity = size;
            if (pinned) {
                pinnedBytes += size;
            } else {
                deviceBytes += size;
            }
            return this;
        }

        long address() {
            return pointer == null ? 0 : pointer.address();
        }

        long capacity() {
            return capacity;
        }

        /** The pinned buffer as a segment (host memory only). */
        @SuppressWarnings("restricted")
        MemorySegment segment() {
            if (!pinned) {
                throw new IllegalStateException(what + " is device memory");
            }
            return MemorySegment.ofAddress(address()).reinterpret(capacity);
        }

        private void release() {
            if (pointer == null) {
                return;
            }
            if (pinned) {
                cudaFreeHost(pointer);
                pinnedBytes -= capacity;
            } else {
                cudaFree(pointer);
                deviceBytes -= capacity;
            }
            pointer = null;
            capacity = 0;
        }
    }

    /** "64 KiB", "3.5 MiB", "2.0 GiB": buffers start at 64 KiB, so whole MiB would often read "0 MiB". */
    static String size(long bytes) {
        if (bytes < 1L << 20) {
            return (bytes + 1023 >> 10) + " KiB";
        }
        return bytes < 1L << 30 ? String.format(Locale.ROOT, "%.1f MiB", bytes / 1048576.0)
                : String.format(Locale.ROOT, "%.1f GiB", bytes / 1073741824.0);
    }

    Buffer device(String what) {
        Buffer b = new Buffer(false, what);
        buffers.add(b);
        return b;
    }

    Buffer pinned(String what) {
        Buffer b = new Buffer(true, what);
        buffers.add(b);
        return b;
    }

    long deviceBytes() {
        return deviceBytes;
    }

    long pinnedBytes() {
        return pinnedBytes;
    }

    /** Device bytes held by the given buffers, which a new size may reuse. */
    static long capacity(Buffer... bs) {
        long n = 0;
        for (Buffer b : bs) {
            n += b.pinned ? 0 : b.capacity;
        }
        return n;
    }

    @Override
    public void close() {
        for (Buffer b : buffers) {
            b.release();
        }
        buffers.clear();
    }
}

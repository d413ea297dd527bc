package dev.dequant4j.internal.safetensors;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Fails the n-th fsync or rename of {@link AtomicDirectory} (its fault seam) and records every one it saw, for the
 * export fault-injection tests. Tests run one at a time in this build; close restores the normal behaviour.
 */
public final class OutputFaults implements AutoCloseable {
    private final String step;
    private final int failAt;
    private final List<Path> seen = new ArrayList<>();

    private OutputFaults(String step, int failAt) {
        this.step = step;
        this.failAt = failAt;
        AtomicDirectory.faults = (s, path) -> {
            if (s.equals(step)) {
                synchronized (seen) {
                    seen.add(path);
                    if (seen.size() == failAt) {
                        throw new IOException("injected " + step + " failure");
                    }
                }
            }
        };
    }

    /** Fails the {@code n}-th (from 1) call of {@code step} ("fsync" or "rename"); 0 fails none and only counts. */
    public static OutputFaults failAt(String step, int n) {
        return new OutputFaults(step, n);
    }

    /** The paths of every call of the step so far. */
    public List<Path> seen() {
        synchronized (seen) {
            return List.copyOf(seen);
        }
    }

    @Override
    public void close() {
        AtomicDirectory.faults = (s, path) -> { };
    }

    @Override
    public String toString() {
        return step + " #" + failAt;
    }
}

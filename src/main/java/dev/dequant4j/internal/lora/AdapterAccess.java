package dev.dequant4j.internal.lora;

import dev.dequant4j.LoraAdapter;
import java.util.function.Function;

/**
 * Reaches the parsed {@link Adapter} behind a public {@link LoraAdapter} without making it public API (the same
 * pattern as {@code dev.dequant4j.internal.Internals} for checkpoints). {@link LoraAdapter} registers itself in its
 * static initializer, which has run by the time anyone holds an instance.
 */
public final class AdapterAccess {
    private static volatile Function<LoraAdapter, Adapter> access;

    private AdapterAccess() {}

    public static void set(Function<LoraAdapter, Adapter> f) {
        if (access != null) {
            throw new IllegalStateException("adapter access is already set");
        }
        access = f;
    }

    public static Adapter of(LoraAdapter a) {
        return access.apply(a);
    }
}

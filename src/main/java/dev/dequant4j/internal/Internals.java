package dev.dequant4j.internal;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.internal.bnb.LogicalTensor;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.safetensors.TensorStore;
import java.nio.file.Path;
import java.util.Map;

/**
 * Gives internal packages access to the internals of public API objects without making them public API (the
 * JDK's SharedSecrets pattern): each public class registers an accessor in its static initializer.
 */
public final class Internals {
    private Internals() {}

    /** What the export pipeline and adapter mapping need from a {@link Checkpoint}. */
    public interface CheckpointAccess {
        TensorStore store(Checkpoint c);

        Map<String, LogicalTensor> logical(Checkpoint c);

        /** config.json, or null. */
        JsonObject config(Checkpoint c);

        /** The config.json file, or null. */
        Path configFile(Checkpoint c);
    }

    private static volatile CheckpointAccess checkpointAccess;
    private static final StackWalker WALKER = StackWalker.getInstance(StackWalker.Option.RETAIN_CLASS_REFERENCE);

    /**
     * Registers {@link Checkpoint}'s accessor, once. The module does not export this package; on the class path,
     * where it is reachable, any other caller (or a second call) is refused, so an application cannot replace the
     * accessor and break every export.
     */
    public static void setCheckpointAccess(CheckpointAccess a) {
        if (WALKER.getCallerClass() != Checkpoint.class) {
            throw new IllegalCallerException("only dev.dequant4j.Checkpoint registers its accessor");
        }
        synchronized (Internals.class) {
            if (checkpointAccess != null) {
                throw new IllegalStateException("the Checkpoint accessor is registered already");
            }
            checkpointAccess = java.util.Objects.requireNonNull(a);
        }
    }

    public static CheckpointAccess checkpoint() {
        CheckpointAccess a = checkpointAccess;
        if (a == null) {
            ensureInitialized(Checkpoint.class);
            a = checkpointAccess;
        }
        return a;
    }

    private static void ensureInitialized(Class<?> c) {
        try {
            Class.forName(c.getName(), true, c.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException(e);
        }
    }
}

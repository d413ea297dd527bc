package dev.dequant4j.internal.safetensors;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Writes tensors whose bytes are at hand into a (possibly sharded) checkpoint directory, atomically. The export
 * pipeline uses {@link ShardedLayout}, {@link ShardFiles} and {@link AtomicDirectory} directly, to produce tensors
 * while writing; this is the simple form for small outputs and tests.
 */
public final class SafetensorsWriter {
    private SafetensorsWriter() {}

    /** A tensor and its little-endian bytes. */
    public record TensorData(ShardedLayout.Spec spec, MemorySegment bytes) {
        public TensorData {
            if (bytes.byteSize() != spec.byteSize()) {
                throw new IllegalArgumentException(spec.name() + ": " + bytes.byteSize() + " bytes given, "
                        + spec.byteSize() + " needed");
            }
        }
    }

    /** Writes the tensors into directory {@code target}; returns the layout used. */
    public static ShardedLayout write(Path target, List<TensorData> tensors, long maxShardBytes, boolean overwrite) {
        List<ShardedLayout.Spec> specs = new ArrayList<>(tensors.size());
        for (TensorData t : tensors) {
            specs.add(t.spec());
        }
        ShardedLayout layout = ShardedLayout.plan(specs, maxShardBytes, 64);
        try (AtomicDirectory out = AtomicDirectory.create(target, overwrite)) {
            try (ShardFiles files = ShardFiles.create(out.dir(), layout)) {
                for (TensorData t : tensors) {
                    files.write(layout.placement(t.spec().name()), 0, t.bytes());
                }
            }
            byte[] index = layout.indexJson();
            if (index != null) {
                Files.write(out.dir().resolve(ShardIndex.FILE_NAME), index);
            }
            out.commit();
        } catch (IOException e) {
            throw new Dequant4jException(Kind.IO, target, "cannot write: " + e.getMessage(), e);
        }
        return layout;
    }
}

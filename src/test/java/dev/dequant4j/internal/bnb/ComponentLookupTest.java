package dev.dequant4j.internal.bnb;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Fixtures;
import dev.dequant4j.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Components are found by name wherever they are stored, in any order, and the keys decide: fixtures rewritten with
 * every tensor in a shard of its own, in reverse order, or without optional keys still dequantize to bitsandbytes'
 * own expected values.
 */
class ComponentLookupTest {
    @TempDir
    Path tmp;

    private static void assertDequantEqualsExpected(Path dir, String fixture) {
        Path expectedFile = Fixtures.root().resolve("expected/checkpoints").resolve(fixture)
                .resolve("expected_dequant.safetensors");
        try (Checkpoint c = Checkpoint.open(dir);
             Checkpoint expected = Checkpoint.open(expectedFile)) {
            int n = 0;
            for (TensorInfo t : expected.tensors()) {
                SyntheticFourBitTest.assertBits(expected.readFloats(t.name()), 0, c.readFloats(t.name()), t.name());
                n++;
            }
            assertEquals(n, c.tensors().stream().filter(TensorInfo::isQuantized).count());
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama-h64-nf4-dq", "llama-h64-fp4-dq", "llama-h64-nf4", "llama-h64-int8",
        "llama-h48-fp16-nf4-dq"})
    void everyTensorInItsOwnShardInReverseOrder(String fixture) {
        CheckpointBuilder original = CheckpointBuilder.copyOf(Fixtures.checkpoint(fixture));
        List<String> names = new ArrayList<>(original.names());
        Collections.reverse(names);
        CheckpointBuilder reversed = new CheckpointBuilder().config(original.config());
        for (String name : names) {
            CheckpointBuilder.Tensor t = original.get(name);
            reversed.put(name, t.dtype(), t.shape(), t.data());
        }
        Path dir = reversed.writeOneShardPerTensor(tmp.resolve("c"));
        try (Checkpoint c = Checkpoint.open(dir)) {
            assertEquals(names.size(), c.files().size(), "one shard per tensor");
            Set<Path> files = new HashSet<>();
            for (TensorInfo t : c.tensors()) {
                if (t.isQuantized()) {
                    c.storedTensors().stream().filter(s -> t.components().contains(s.name()))
                            .forEach(s -> files.add(s.file()));
                }
            }
            assertEquals(c.storedTensors().size() - c.tensors().stream().filter(t -> !t.isQuantized()).count(),
                    files.size());
        }
        assertDequantEqualsExpected(dir, fixture);
    }

    /** bitsandbytes up to 0.42 kept weight_format as a Python string, so files have no such key: row format. */
    @Test
    void int8WithoutWeightFormatIsRowFormat() {
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-int8"));
        for (String name : b.names()) {
            if (name.endsWith(".weight_format")) {
                b.remove(name);
            }
        }
        Path dir = b.write(tmp.resolve("noformat"));
        assertDequantEqualsExpected(dir, "llama-h64-int8");
    }

    /** A row weight_format stored in a wider integer dtype (scalar or [1]) is still row format. */
    @ParameterizedTest
    @EnumSource(value = DType.class,
            names = {"I8", "I16", "U16", "I32", "U32", "I64", "U64"})
    void int8WeightFormatOfAnotherIntegerDtype(DType dtype) {
        CheckpointBuilder b = CheckpointBuilder.copyOf(Fixtures.checkpoint("llama-h64-int8"));
        boolean vector = false;
        for (String name : b.names()) {
            if (name.endsWith(".weight_format")) {
                b.put(name, dtype, vector ? new long[] {1} : new long[0], new byte[dtype.bits() / 8]);
                vector = !vector;
            }
        }
        assertDequantEqualsExpected(b.write(tmp.resolve("fmt")), "llama-h64-int8");
    }

    /** The keys decide, not the config: a checkpoint without config.json still has its 4-bit and int8 weights. */
    @ParameterizedTest
    @ValueSource(strings = {"llama-h64-nf4-dq", "llama-h64-int8", "llama-h64-mixed"})
    void withoutConfig(String fixture) {
        Path dir = CheckpointBuilder.copyOf(Fixtures.checkpoint(fixture)).config(null).write(tmp.resolve("nocfg"));
        assertDequantEqualsExpected(dir, fixture);
    }
}

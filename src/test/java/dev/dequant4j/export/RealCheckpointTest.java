package dev.dequant4j.export;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Checkpoint;
import dev.dequant4j.DType;
import dev.dequant4j.Export;
import dev.dequant4j.Fixtures;
import dev.dequant4j.QuantKind;
import dev.dequant4j.TensorInfo;
import dev.dequant4j.internal.export.Manifest;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Checkpoints saved by transformers 5.17's {@code save_pretrained} after loading with a {@code BitsAndBytesConfig}
 * on CPU (bitsandbytes 0.50), one per architecture and quantization (fixtures/real/README.md): every quantized tensor
 * dequantizes bit for bit as bitsandbytes' default kernel does, and the export has exactly the tensor names, shapes
 * and dtypes of the 16-bit original that transformers saved, so that transformers loads both the same way (MoE
 * experts under their per-expert checkpoint names, which transformers fuses on load; Gemma 3's text under
 * {@code language_model.model.}).
 */
class RealCheckpointTest {
    @TempDir
    Path tmp;

    static List<String> checkpoints() {
        return Fixtures.realNames("checkpoints");
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void dequantIsBitExactWithBitsandbytes(String name) throws IOException {
        Path dir = Fixtures.real().resolve(name);
        JsonObject expected = Json.readObject(dir.resolve("expected-dequant.json"), Json.MAX_FILE_BYTES);
        try (Checkpoint c = Checkpoint.open(dir)) {
            TreeSet<String> quantized = new TreeSet<>();
            c.tensors().stream().filter(TensorInfo::isQuantized).forEach(t -> quantized.add(t.name()));
            assertEquals(new TreeSet<>(expected.keys()), quantized, "quantized tensors");
            assertFalse(quantized.isEmpty());
            for (String t : quantized) {
                JsonObject e = expected.getObject(t);
                TensorInfo info = c.tensor(t);
                assertEquals(e.getString("kind"), info.kind().name(), t);
                assertArrayEquals(longs(e.getArray("shape")), info.shape(), t);
                if (info.kind() != QuantKind.INT8) {
                    assertEquals(e.getLong("blocksize"), info.blocksize(), t);
                }
                assertEquals(e.getString("sha256"), sha256(c.readFloats(t)), t + ": F32 dequant differs from bnb's");
            }
        }
    }

    @ParameterizedTest
    @MethodSource("checkpoints")
    void exportHasTheOriginalsTensors(String name) throws IOException {
        Path out = tmp.resolve("out");
        try (Checkpoint c = Checkpoint.open(Fixtures.real().resolve(name))) {
            Export.of(c).dtype(DType.BF16).threads(2).to(out);
        }
        String arch = name.substring(0, name.indexOf('-'));
        JsonObject original = Json.readObject(Fixtures.real().resolve(arch + "-bf16/original-header.json"),
                Json.MAX_FILE_BYTES);
        Map<String, String> want = new TreeMap<>();
        for (String k : original.keys()) {
            JsonObject t = original.getObject(k);
            want.put(k, t.getString("dtype") + java.util.Arrays.toString(longs(t.getArray("shape"))));
        }
        Map<String, String> got = new TreeMap<>();
        try (Checkpoint e = Checkpoint.open(out)) {
            for (TensorInfo t : e.tensors()) {
                got.put(t.name(), t.dtype().name() + java.util.Arrays.toString(t.shape()));
            }
            Map<String, Object> cfg = e.config().orElseThrow();
            assertFalse(cfg.containsKey("quantization_config"));
            if (cfg.get("text_config") instanceof Map<?, ?> text) {
                assertFalse(text.containsKey("quantization_config"));
            }
        }
        assertEquals(want, got, "tensor names, dtypes and shapes against the 16-bit original");
        assertTrue(Manifest.verify(out).isEmpty(), () -> Manifest.verify(out).toString());
    }

    static long[] longs(JsonArray a) {
        long[] out = new long[a.values().size()];
        int i = 0;
        for (JsonValue v : a.values()) {
            out[i++] = ((JsonNumber) v).longValue();
        }
        return out;
    }

    /** SHA-256 of the values as little-endian float32, as the generator hashes bitsandbytes' output. */
    static String sha256(float[] values) {
        ByteBuffer b = ByteBuffer.allocate(values.length * Float.BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(values);
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b.array()));
        } catch (NoSuchAlgorithmException ex) {
            throw new IllegalStateException(ex);
        }
    }
}

package dev.dequant4j.internal.gguf;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Fixtures;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonObject;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

/** Our tokenizer metadata against what llama.cpp's convert_hf_to_gguf.py wrote (fixtures/gguf/README.md). */
class GgufTokenizerTest {

    static Path gguf(String dir) {
        try {
            return Path.of(GgufTokenizerTest.class.getResource("/fixtures/gguf/" + dir).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static Map<String, Path> files(Path dir) throws IOException {
        Map<String, Path> m = new TreeMap<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.filter(Files::isRegularFile).forEach(p -> m.put(p.getFileName().toString(), p));
        }
        return m;
    }

    static JsonObject json(Path p) throws IOException {
        return Json.readObject(p, 1 << 20);
    }

    /** Every tokenizer.* key of {@code reference}, in order, with its type and value, equals ours. */
    static void assertSameAsConverter(Path reference, GgufTokenizer tok) {
        GgufMetadata ours = new GgufMetadata();
        tok.writeTo(ours);
        try (GgufFile ref = GgufFile.open(reference)) {
            List<String> refKeys = new ArrayList<>();
            ref.metadata().entries().keySet().stream().filter(k -> k.startsWith("tokenizer.")).forEach(refKeys::add);
            assertEquals(refKeys, List.copyOf(ours.entries().keySet()), "tokenizer keys in order");
            for (String k : refKeys) {
                GgufMetadata.Value r = ref.metadata().get(k);
                GgufMetadata.Value o = ours.get(k);
                assertEquals(r.type(), o.type(), k);
                assertEquals(r.elementType(), o.elementType(), k);
                switch (r.value()) {
                    case int[] a -> assertArrayEquals(a, (int[]) o.value(), k);
                    case float[] a -> assertArrayEquals(a, (float[]) o.value(), k);
                    case long[] a -> assertArrayEquals(a, (long[]) o.value(), k);
                    default -> assertEquals(r.value(), o.value(), k);
                }
            }
            Object tokens = ref.metadata().get("tokenizer.ggml.tokens").value();
            assertEquals(((List<?>) tokens).size(), tok.size());
        }
    }

    @Test
    void llama3BpeEqualsTheConverter() throws IOException {
        Path dir = gguf("llama-bpe");
        JsonObject config = json(Fixtures.real().resolve("llama-nf4-dq/config.json"));
        Map<String, Path> files = files(dir);
        files.keySet().removeIf(n -> n.endsWith(".gguf"));
        GgufTokenizer tok = GgufTokenizer.read(files, "llama", 256, config);
        assertSameAsConverter(dir.resolve("llama-lora-f32.gguf"), tok);
    }

    /** The tokenizer files of fixtures/gguf/tokenizers/KIND (without the references and their configs). */
    static Map<String, Path> tokenizerFiles(String kind) throws IOException {
        Map<String, Path> files = files(gguf("tokenizers/" + kind));
        files.keySet().removeIf(n -> n.endsWith(".gguf") || n.endsWith("-config.json"));
        return files;
    }

    @ParameterizedTest
    @CsvSource({"bpe-qwen2, qwen2", "bpe-qwen2, qwen3", "spm-llama, llama", "spm-mistral, llama", "spm-gemma, gemma2", "spm-gemma, gemma3",
            "spm-phi3, phi3"})
    void equalsTheConverter(String kind, String arch) throws IOException {
        Path dir = gguf("tokenizers/" + kind);
        JsonObject config = json(dir.resolve(arch + "-config.json"));
        GgufTokenizer tok = GgufTokenizer.read(tokenizerFiles(kind), arch, config.getLong("vocab_size"), config);
        assertSameAsConverter(dir.resolve(arch + ".gguf"), tok);
    }

    /** The llama-bpe model directory with tokenizer.json edited by {@code edit} (a text replacement). */
    private static Map<String, Path> llamaBpeWith(Path tmp, String from, String to) throws IOException {
        Map<String, Path> files = files(gguf("llama-bpe"));
        files.keySet().removeIf(n -> n.endsWith(".gguf"));
        String text = Files.readString(files.get("tokenizer.json"));
        assertTrue(text.contains(from), from);
        Path edited = Files.writeString(tmp.resolve("tokenizer.json"), text.replace(from, to));
        files.put("tokenizer.json", edited);
        return files;
    }

    private static Dequant4jException refused(Map<String, Path> files, String arch, long vocab) throws IOException {
        JsonObject config = json(Fixtures.real().resolve("llama-nf4-dq/config.json"));
        Dequant4jException e = assertThrows(Dequant4jException.class, () -> GgufTokenizer.read(files, arch, vocab, config));
        assertFalse(e.getMessage().contains("\n"), e.getMessage());
        return e;
    }

    @Test
    void refusesAnUnknownPreTokenizer(@TempDir Path tmp) throws IOException {
        // One character of the Llama 3 regex changed: no llama.cpp pre-tokenizer splits like that.
        Dequant4jException e = refused(llamaBpeWith(tmp, "\\p{N}{1,3}", "\\p{N}{1,4}"), "llama", 256);
        assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, e.kind());
        assertTrue(e.getMessage().contains("unknown BPE pre-tokenizer"), e.getMessage());
        assertTrue(e.getMessage().contains("tokenizer.json"), e.getMessage());
    }

    @Test
    void refusesANonBpeModel(@TempDir Path tmp) throws IOException {
        Dequant4jException e = refused(llamaBpeWith(tmp, "\"type\": \"BPE\"", "\"type\": \"WordPiece\""), "llama", 256);
        assertTrue(e.getMessage().contains("model type WordPiece is not supported"), e.getMessage());
    }

    @Test
    void refusesTokenIdsPastVocabSize() throws IOException {
        Map<String, Path> files = files(gguf("llama-bpe"));
        files.keySet().removeIf(n -> n.endsWith(".gguf"));
        Dequant4jException e = refused(files, "llama", 200);
        assertTrue(e.getMessage().contains("is not under config.json's vocab_size 200"), e.getMessage());
    }

    @Test
    void refusesAnArchitectureWithoutTokenizerConversion() throws IOException {
        Map<String, Path> files = files(gguf("llama-bpe"));
        Dequant4jException e = refused(files, "gpt2", 256);
        assertTrue(e.getMessage().contains("gpt2"), e.getMessage());
    }
}

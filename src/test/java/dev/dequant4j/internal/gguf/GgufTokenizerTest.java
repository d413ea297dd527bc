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
            "spm-phi3, phi3", "bpe-gpt2, phi3", "sv-roberta, qwen2", "sv-template-eos, qwen2", "sv-no-config, qwen2",
            "sv-chat-list, qwen2", "sv-spm-extras, llama", "sv-spm-unigram, llama",
            "sv-bpe-named, qwen2", "sv-default-added, qwen2", "sv-default-added, qwen3", "sv-default-llama, llama",
            "sv-default-promoted, llama"})
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

    /** fixtures/gguf/tokenizers/KIND copied to {@code tmp}, with {@code name} replaced by {@code contents}. */
    private static Map<String, Path> kindWith(Path tmp, String kind, String name, byte[] contents) throws IOException {
        Map<String, Path> files = tokenizerFiles(kind);
        files.put(name, Files.write(tmp.resolve(name), contents));
        return files;
    }

    private static Dequant4jException refusedKind(Map<String, Path> files, String kind, String arch) throws IOException {
        JsonObject config = json(gguf("tokenizers/" + kind).resolve(arch + "-config.json"));
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> GgufTokenizer.read(files, arch, config.getLong("vocab_size"), config));
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        return e;
    }

    @Test
    void refusesATruncatedOrGarbageTokenizerModel(@TempDir Path tmp) throws IOException {
        byte[] model = Files.readAllBytes(gguf("tokenizers/spm-llama").resolve("tokenizer.model"));
        Dequant4jException e = refusedKind(kindWith(tmp, "spm-llama", "tokenizer.model",
                java.util.Arrays.copyOf(model, model.length / 2)), "spm-llama", "llama");
        assertEquals(Dequant4jException.Kind.CORRUPT_INPUT, e.kind());
        assertTrue(e.getMessage().contains("tokenizer.model: not a valid SentencePiece model"), e.getMessage());
        e = refusedKind(kindWith(tmp, "spm-gemma", "tokenizer.model", "<html>no</html>".getBytes()), "spm-gemma",
                "gemma2");
        assertTrue(e.getMessage().contains("tokenizer.model: not a valid SentencePiece model"), e.getMessage());
    }

    private static byte[] edited(String kind, String file, String from, String to) throws IOException {
        String text = Files.readString(gguf("tokenizers/" + kind).resolve(file));
        assertTrue(text.contains(from), from);
        return text.replace(from, to).getBytes(java.nio.charset.StandardCharsets.UTF_8);
    }

    @Test
    void refusesTokenIdsTheConverterCannotPlace(@TempDir Path tmp) throws IOException {
        // Phi-3's converter indexes its token list with added_tokens_decoder's ids unchecked: past vocab_size it fails.
        Dequant4jException e = refusedKind(kindWith(tmp, "spm-phi3", "tokenizer_config.json",
                edited("spm-phi3", "tokenizer_config.json", "\"405\":", "\"999\":")), "spm-phi3", "phi3");
        assertTrue(e.getMessage().contains("added_tokens_decoder id 999 is past config.json's vocab_size 410"),
                e.getMessage());
        // A negative id would index from the end in Python.
        e = refusedKind(kindWith(tmp, "spm-llama", "added_tokens.json", "{\"<x>\": -1}".getBytes()), "spm-llama",
                "llama");
        assertTrue(e.getMessage().contains("added_tokens.json: <x>: token id must be a non-negative integer"),
                e.getMessage());
    }

    @Test
    void refusesSpecialTokensTransformersWouldAdd(@TempDir Path tmp) throws IOException {
        Dequant4jException e = refusedKind(kindWith(tmp, "bpe-qwen2", "tokenizer_config.json",
                edited("bpe-qwen2", "tokenizer_config.json", "\"pad_token\": \"<|endoftext|>\"",
                        "\"pad_token\": \"<|pad|>\"")), "bpe-qwen2", "qwen2");
        assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, e.kind());
        assertTrue(e.getMessage().contains("names the special token '<|pad|>', which tokenizer.json does not have"),
                e.getMessage());
    }

    /** What transformers' class would add is mirrored for one token (sv-default-*), and refused for more or unknown. */
    @Test
    void refusesDefaultSpecialTokensNotMirrored(@TempDir Path tmp) throws IOException {
        // LlamaTokenizer's defaults bos <s> and unk <unk>, both absent: two new tokens.
        Dequant4jException e = refusedKind(kindWith(tmp, "sv-default-llama", "tokenizer_config.json",
                edited("sv-default-llama", "tokenizer_config.json", "\"bos_token\": null,", "")),
                "sv-default-llama", "llama");
        assertEquals(Dequant4jException.Kind.UNSUPPORTED_INPUT, e.kind());
        assertTrue(e.getMessage().contains("LlamaTokenizer (the class transformers loads) would add its default "
                + "special tokens [<s>, <unk>]"), e.getMessage());
        // qwen3 keeps a tokenizer_class it has no defaults for here; qwen2 would overrule it with Qwen2Tokenizer.
        Map<String, Path> bert = kindWith(tmp, "bpe-qwen2", "tokenizer_config.json", edited("bpe-qwen2",
                "tokenizer_config.json", "\"Qwen2Tokenizer\"", "\"BertTokenizerFast\""));
        e = refusedKind(bert, "bpe-qwen2", "qwen3");
        assertTrue(e.getMessage().contains("tokenizer_class BertTokenizerFast: its default special tokens"),
                e.getMessage());
        JsonObject config = json(gguf("tokenizers/bpe-qwen2").resolve("qwen2-config.json"));
        assertEquals(411, GgufTokenizer.read(bert, "qwen2", config.getLong("vocab_size"), config).size());
        // A remote-code tokenizer: the class is not certain.
        e = refusedKind(kindWith(tmp, "bpe-qwen2", "tokenizer_config.json", edited("bpe-qwen2", "tokenizer_config.json",
                "\"add_bos_token\"", "\"auto_map\": {\"AutoTokenizer\": [\"t.T\", null]}, \"add_bos_token\"")),
                "bpe-qwen2", "qwen2");
        assertTrue(e.getMessage().contains("tokenizer_config.json: has an auto_map"), e.getMessage());
    }

    @Test
    void aSpecialIdPastTheVocabularyIsRefusedForBpe(@TempDir Path tmp) throws IOException {
        // gguf-py does not check config.json's ids against a BPE vocabulary; llama.cpp would get an id it lacks.
        Path dir = gguf("tokenizers/bpe-qwen2");
        JsonObject config = json(dir.resolve("qwen2-config.json"));
        String text = Files.readString(dir.resolve("qwen2-config.json")).replace("\"bos_token_id\": 400",
                "\"bos_token_id\": 5000");
        JsonObject bad = Json.parseObject(text.getBytes(java.nio.charset.StandardCharsets.UTF_8));
        Dequant4jException e = assertThrows(Dequant4jException.class,
                () -> GgufTokenizer.read(tokenizerFiles("bpe-qwen2"), "qwen2", config.getLong("vocab_size"), bad));
        assertTrue(e.getMessage().contains("bos token id 5000"), e.getMessage());
    }

    @Test
    void refusesAnAddedTokenTheConverterWouldMangle(@TempDir Path tmp) throws IOException {
        // decode(encode("café")) through the ByteLevel decoder gives "caf\uFFFD" in the converter.
        Map<String, Path> files = kindWith(tmp, "bpe-qwen2", "tokenizer.json",
                edited("bpe-qwen2", "tokenizer.json", "\"content\": \"<tool_call>\"", "\"content\": \"caf\u00e9\""));
        files.remove("tokenizer_config.json");
        Dequant4jException e = refusedKind(files, "bpe-qwen2", "qwen2");
        assertTrue(e.getMessage().contains("decodes to bytes that are not UTF-8"), e.getMessage());
    }
}

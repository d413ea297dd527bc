package dev.dequant4j.internal.gguf;

import static dev.dequant4j.internal.gguf.TokenizerFiles.integer;
import static dev.dequant4j.internal.gguf.TokenizerFiles.str;
import static dev.dequant4j.internal.gguf.TokenizerFiles.truthy;

import dev.dequant4j.Dequant4jException;
import dev.dequant4j.Dequant4jException.Kind;
import dev.dequant4j.internal.json.Json;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonNumber;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonValue;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The {@code tokenizer.*} metadata llama.cpp's {@code convert_hf_to_gguf.py} (81ff7ab) writes for a model directory,
 * computed as its code computes it: {@code set_vocab} of the architecture's model class ({@code LlamaModel} for llama
 * and mistral, {@code Qwen2Model}/{@code Qwen3Model}, {@code Gemma2Model}, {@code Gemma3Model}, {@code Phi3MiniModel}),
 * {@code _set_vocab_gpt2} with {@code get_vocab_base} for a byte-level BPE tokenizer.json, {@code _set_vocab_sentencepiece}
 * with {@code _create_vocab_sentencepiece} for a tokenizer.model, and gguf-py's {@code SpecialVocab} ({@link SpecialVocab}).
 * Where the converter asks transformers (the added tokens' flags, the vocabulary) the answer is derived from the files
 * and every case where that derivation could differ from transformers' is refused. The one deliberate difference: the
 * converter names a BPE pre-tokenizer by hashing the token ids of a test string, so it refuses any vocabulary it has
 * not seen; here the name is decided from the pre-tokenizer's own configuration (the split regex llama.cpp implements
 * under that name), and any other configuration is refused.
 */
public final class GgufTokenizer {
    private static final String TJ = "tokenizer.json";
    private static final String TC = "tokenizer_config.json";
    private static final String SPM = "tokenizer.model";

    /** Token types ({@code gguf.TokenType}). */
    private static final int NORMAL = 1;
    private static final int CONTROL = 3;
    private static final int USER_DEFINED = 4;
    private static final int UNUSED = 5;

    /** The largest tokenizer.model read (Gemma 3's is 4.7 MB). */
    private static final long MAX_SPM_BYTES = 64L << 20;

    /** Split regexes of byte-level BPE tokenizers, as tokenizer.json spells them, and llama.cpp's name for each. */
    private static final Map<String, String> SPLIT_REGEXES = Map.of(
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                    + "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "llama-bpe",
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                    + "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", "qwen2");

    private final GgufMetadata kv;
    private final int size;

    private GgufTokenizer(GgufMetadata kv, int size) {
        this.kv = kv;
        this.size = size;
    }

    /** Tokens after padding to {@code vocab_size}. */
    public int size() {
        return size;
    }

    /** Appends every {@code tokenizer.*} key, in the converter's order and with its GGUF types. */
    public void writeTo(GgufMetadata md) {
        kv.entries().forEach(md::put);
    }

    /**
     * Reads the tokenizer of a model directory.
     *
     * @param files the directory's regular files by name
     * @param arch the GGUF architecture name
     * @param vocabSize config.json's {@code vocab_size}, which the converter pads the vocabulary to
     * @param config config.json
     */
    public static GgufTokenizer read(Map<String, Path> files, String arch, long vocabSize, JsonObject config) {
        TokenizerFiles f = new TokenizerFiles(files);
        if (vocabSize < 0 || vocabSize > GgufFile.MAX_STRINGS) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, "config.json: vocab_size " + vocabSize
                    + " is not 0.." + GgufFile.MAX_STRINGS);
        }
        GgufMetadata md = new GgufMetadata();
        Vocab v = switch (arch) {
            case "llama", "mistral" -> llama(f, md, vocabSize, config);
            case "qwen2", "qwen3" -> f.has(SPM) ? sentencepiece(f, md, vocabSize, config) : gpt2(f, md, vocabSize, config);
            case "gemma2" -> {
                if (!f.has(SPM)) {
                    throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, "gemma2 needs tokenizer.model");
                }
                Vocab s = sentencepiece(f, md, vocabSize, config);
                md.putBool("tokenizer.ggml.add_space_prefix", false);
                yield s;
            }
            case "gemma3" -> {
                if (!f.has(SPM)) {
                    yield gpt2(f, md, vocabSize, config);
                }
                Vocab s = sentencepiece(f, md, vocabSize, config);
                md.putBool("tokenizer.ggml.add_space_prefix", false);
                yield s;
            }
            case "phi3" -> phi3(f, md, vocabSize, config);
            default -> throw new Dequant4jException(Kind.UNSUPPORTED_INPUT,
                    "no tokenizer conversion for the architecture " + arch);
        };
        return new GgufTokenizer(md, v.size);
    }

    /** What a set_vocab produced: the number of tokens. */
    private record Vocab(int size) {}

    /** {@code LlamaModel.set_vocab} (llama and mistral: transformers' MistralForCausalLM converts as llama). */
    private static Vocab llama(TokenizerFiles f, GgufMetadata md, long vocabSize, JsonObject config) {
        if (f.has("tekken.json") && !f.has(TJ)) {
            throw f.unsupported("tekken.json", "Mistral's tekken tokenizer is not supported");
        }
        JsonObject tc = f.json(TC);
        if (tc != null) {
            JsonValue aps = tc.get("add_prefix_space");
            if (aps != null && aps != JsonNull.NULL) {
                if (!(aps instanceof JsonBoolean b)) {
                    throw f.corrupt(TC, "add_prefix_space must be a boolean");
                }
                md.putBool("tokenizer.ggml.add_space_prefix", b.value());
            }
            if ("HybridDNATokenizer".equals(str(tc.get("tokenizer_class")))) {
                throw f.unsupported(TC, "HybridDNATokenizer is not supported");
            }
        }
        Vocab v;
        if (f.has(SPM)) {
            v = sentencepiece(f, md, vocabSize, config);
        } else if (isLlamaHf(f)) {
            throw f.unsupported(TJ, "a SentencePiece-style BPE tokenizer.json (byte_fallback) without tokenizer.model "
                    + "is not supported");
        } else {
            v = gpt2(f, md, vocabSize, config);
        }
        if (vocabSize == 32016) {
            // CodeLlama: the infill tokens; gguf-py has a writer only for eot of these four.
            SpecialVocab sv = new SpecialVocab(f, config, false, List.of("prefix", "suffix", "middle", "eot"), null);
            sv.setSpecialToken("prefix", JsonNumber.of(32007), "config.json");
            sv.setSpecialToken("suffix", JsonNumber.of(32008), "config.json");
            sv.setSpecialToken("middle", JsonNumber.of(32009), "config.json");
            sv.setSpecialToken("eot", JsonNumber.of(32010), "config.json");
            sv.addTo(md);
        }
        if (vocabSize == 49152) {
            // The converter's rule for Granite's small models, applied to any llama with this vocabulary size.
            md.putBool("tokenizer.ggml.add_bos_token", false);
        }
        return v;
    }

    /** {@code LlamaHfVocab}'s test: it takes a byte-fallback BPE whose decoder is a Sequence. */
    private static boolean isLlamaHf(TokenizerFiles f) {
        JsonObject tj = f.json(TJ);
        if (tj == null) {
            return false;
        }
        JsonValue model = tj.get("model");
        String type = str(f.get(TJ, model, "type"));
        JsonValue ignoreMerges = f.get(TJ, model, "ignore_merges");
        JsonValue byteFallback = f.get(TJ, model, "byte_fallback");
        boolean isLlama3 = "BPE".equals(type) && truthy(ignoreMerges) && !(byteFallback == null || truthy(byteFallback));
        if (isLlama3 || !"BPE".equals(type) || !truthy(byteFallback)) {
            return false;
        }
        JsonValue decoder = tj.get("decoder");
        return decoder instanceof JsonObject d && "Sequence".equals(str(d.get("type")));
    }

    /** {@code Phi3MiniModel.set_vocab}. */
    private static Vocab phi3(TokenizerFiles f, GgufMetadata md, long vocabSize, JsonObject config) {
        JsonObject tc = f.json(TC);
        if (tc != null) {
            JsonValue cls = tc.get("tokenizer_class");
            if (cls == null) {
                throw f.unsupported(TC, "has no tokenizer_class (the converter needs it for phi3)");
            }
            if ("GPT2Tokenizer".equals(str(cls))) {
                return gpt2(f, md, vocabSize, config);
            }
        }
        if (!f.has(SPM)) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, "phi3 needs tokenizer.model");
        }
        SentencePieceModel sp = SentencePieceModel.parse(f.path(SPM), f.bytes(SPM, MAX_SPM_BYTES));
        int n = vocabSize == 0 ? sp.pieces().size() : (int) vocabSize;
        SpmVocab v = new SpmVocab(n);
        if (sp.pieces().size() > n) {
            throw f.unsupported(SPM, "has " + sp.pieces().size() + " pieces, more than config.json's vocab_size " + n
                    + " (the converter fails on that for phi3)");
        }
        v.fill(sp, sp.pieces().size());
        if (f.has("added_tokens.json")) {
            JsonObject added = f.json("added_tokens.json");
            for (String key : added.keys()) {
                long id = tokenId(f, "added_tokens.json", added.get(key), key);
                if (id < n) {
                    v.set((int) id, key, -1000f, USER_DEFINED);
                }
            }
        }
        if (tc != null) {
            JsonObject decoder = decoderOf(f, tc);
            for (String key : decoder.keys()) {
                int id = inRange(f, TC, decimalId(f, key), n, "added_tokens_decoder id");
                JsonValue data = decoder.get(key);
                String content = content(f, TC, data, "added_tokens_decoder[" + key + "]");
                v.set(id, content, -1000f, truthy(f.get(TC, data, "special")) ? CONTROL : USER_DEFINED);
            }
        }
        JsonObject tj = f.json(TJ);
        if (tj != null && tj.get("added_tokens") != null) {
            for (JsonValue data : f.list(TJ, tj.get("added_tokens"), "added_tokens").values()) {
                JsonValue idv = f.get(TJ, data, "id");
                int id = inRange(f, TJ, tokenId(f, TJ, idv, "added token"), n, "added token id");
                String content = content(f, TJ, data, "added token " + id);
                v.set(id, content, -1000f, truthy(f.get(TJ, data, "special")) ? CONTROL : USER_DEFINED);
            }
        }
        return v.write(f, md, config);
    }

    private static int inRange(TokenizerFiles f, String file, long id, int n, String what) {
        if (id >= n) {
            throw f.unsupported(file, what + " " + id + " is past config.json's vocab_size " + n
                    + " (the converter fails on that for phi3)");
        }
        return (int) id;
    }

    /** {@code _set_vocab_sentencepiece} with {@code _create_vocab_sentencepiece}. */
    private static Vocab sentencepiece(TokenizerFiles f, GgufMetadata md, long vocabSize, JsonObject config) {
        SentencePieceModel sp = SentencePieceModel.parse(f.path(SPM), f.bytes(SPM, MAX_SPM_BYTES));
        int n = vocabSize == 0 ? sp.pieces().size() : (int) vocabSize;
        SpmVocab v = new SpmVocab(n);
        // Pieces past vocab_size are dropped, as the converter drops them (with a warning).
        v.fill(sp, Math.min(n, sp.pieces().size()));
        if (f.has("added_tokens.json")) {
            JsonObject added = f.json("added_tokens.json");
            for (String key : added.keys()) {
                long id = tokenId(f, "added_tokens.json", added.get(key), key);
                if (id < n) {
                    v.set((int) id, key, -1000f, USER_DEFINED);
                }
            }
        }
        JsonObject tc = f.json(TC);
        if (tc != null) {
            JsonObject decoder = decoderOf(f, tc);
            for (String key : decoder.keys()) {
                long id = decimalId(f, key);
                JsonValue data = decoder.get(key);
                String token = content(f, TC, data, "added_tokens_decoder[" + key + "]");
                if (id >= n) {
                    continue;
                }
                if (truthy(f.get(TC, data, "special")) || looksSpecial(token)) {
                    v.set((int) id, token, -1000f, CONTROL);
                } else {
                    v.set((int) id, token.replace('\u2581', ' '), -1000f, USER_DEFINED);
                }
            }
        }
        return v.write(f, md, config);
    }

    private static JsonObject decoderOf(TokenizerFiles f, JsonObject tc) {
        JsonValue d = tc.get("added_tokens_decoder");
        if (d == null || d == JsonNull.NULL) {
            return JsonObject.empty();
        }
        if (!(d instanceof JsonObject o)) {
            throw f.corrupt(TC, "added_tokens_decoder must be an object");
        }
        return o;
    }

    /** An {@code added_tokens_decoder} key, as {@code int(key)} reads it (refusing the negative ids Python would wrap). */
    private static long decimalId(TokenizerFiles f, String key) {
        if (!key.matches("[0-9]{1,9}")) {
            throw f.corrupt(TC, "added_tokens_decoder key '" + key + "' is not a token id");
        }
        return Long.parseLong(key);
    }

    private static long tokenId(TokenizerFiles f, String file, JsonValue v, String what) {
        Long id = integer(v);
        if (id == null || id < 0) {
            throw f.corrupt(file, what + ": token id must be a non-negative integer");
        }
        return id;
    }

    private static String content(TokenizerFiles f, String file, JsonValue data, String what) {
        String s = str(f.get(file, data, "content"));
        if (s == null) {
            throw f.corrupt(file, what + " has no string content");
        }
        return s;
    }

    /** The token arrays of the SentencePiece paths. */
    private static final class SpmVocab {
        final String[] tokens;
        final float[] scores;
        final int[] types;

        SpmVocab(int n) {
            tokens = new String[n];
            scores = new float[n];
            types = new int[n];
            for (int i = 0; i < n; i++) {
                tokens[i] = "[PAD" + i + "]";
            }
            Arrays.fill(scores, -10000f);
            Arrays.fill(types, UNUSED);
        }

        void fill(SentencePieceModel sp, int count) {
            for (int id = 0; id < count; id++) {
                SentencePieceModel.Piece p = sp.pieces().get(id);
                // USER_DEFINED pieces stay NORMAL: the converter asks IsUnknown/IsControl/IsUnused/IsByte only.
                int t = switch (p.type()) {
                    case SentencePieceModel.UNKNOWN, SentencePieceModel.CONTROL, SentencePieceModel.UNUSED,
                         SentencePieceModel.BYTE -> p.type();
                    default -> NORMAL;
                };
                set(id, p.piece(), p.score(), t);
            }
        }

        void set(int id, String token, float score, int type) {
            tokens[id] = token;
            scores[id] = score;
            types[id] = type;
        }

        Vocab write(TokenizerFiles f, GgufMetadata md, JsonObject config) {
            md.putString("tokenizer.ggml.model", "llama");
            md.putString("tokenizer.ggml.pre", "default");
            putTokens(md, List.of(tokens));
            md.putFloat32Array("tokenizer.ggml.scores", scores);
            md.putInt32Array("tokenizer.ggml.token_type", types);
            new SpecialVocab(f, config, false, SpecialVocab.DEFAULT_TYPES, (long) tokens.length).addTo(md);
            return new Vocab(tokens.length);
        }
    }

    private static void putTokens(GgufMetadata md, List<String> tokens) {
        if (!tokens.isEmpty()) {
            md.putStringArray("tokenizer.ggml.tokens", tokens);
        }
    }

    /** {@code TextModel.does_token_look_special}. */
    static boolean looksSpecial(String t) {
        return t.equals("<pad>") || t.equals("<mask>") || t.equals("<2mass>") || t.equals("[@BOS@]")
                || (t.startsWith("<|") && t.endsWith("|>"))
                || (t.startsWith("<\uFF5C") && t.endsWith("\uFF5C>"))
                || (t.startsWith("<unused") && t.endsWith(">"));
    }

    /** {@code _set_vocab_gpt2} with {@code get_vocab_base}. */
    private static Vocab gpt2(TokenizerFiles f, GgufMetadata md, long vocabSize, JsonObject config) {
        JsonObject tj = f.json(TJ);
        if (tj == null) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, "no tokenizer.json or tokenizer.model in the model "
                    + "directory (a slow vocab.json/merges.txt tokenizer is not supported)");
        }
        JsonValue model = tj.get("model");
        String type = model == null ? null : str(f.get(TJ, model, "type"));
        if (!"BPE".equals(type)) {
            throw f.unsupported(TJ, "model type " + type + " is not supported (only byte-level BPE)");
        }
        if (truthy(f.get(TJ, model, "byte_fallback")) || truthy(f.get(TJ, model, "continuing_subword_prefix"))
                || truthy(f.get(TJ, model, "end_of_word_suffix"))) {
            throw f.unsupported(TJ, "a BPE with byte_fallback, continuing_subword_prefix or end_of_word_suffix is not "
                    + "a byte-level BPE llama.cpp reads as gpt2");
        }
        String pre = preTokenizer(f, tj);
        Map<Long, String> byId = new HashMap<>();
        Map<String, Long> byToken = new HashMap<>();
        JsonValue vocabV = f.get(TJ, model, "vocab");
        if (!(vocabV instanceof JsonObject vocab)) {
            throw f.corrupt(TJ, "model.vocab must be an object");
        }
        for (String tok : vocab.keys()) {
            long id = tokenId(f, TJ, vocab.get(tok), "model.vocab['" + tok + "']");
            if (byId.putIfAbsent(id, tok) != null) {
                throw f.corrupt(TJ, "token id " + id + " is in model.vocab twice");
            }
            byToken.put(tok, id);
        }
        Map<Long, Added> addedSpecial = addedTokens(f, tj, byId, byToken);
        checkAddedTokensDecoder(f, addedSpecial, byId);
        markNamedSpecials(f, byToken, addedSpecial);
        classDefaults(f, config, byId, byToken, addedSpecial);
        checkAddedTokensJson(f, byToken);

        long maxId = byId.keySet().stream().mapToLong(Long::longValue).max().orElse(-1);
        if (maxId >= vocabSize) {
            throw f.corrupt(TJ, "token id " + maxId + " is not under config.json's vocab_size " + vocabSize);
        }
        int n = (int) vocabSize;
        List<String> tokens = new ArrayList<>(n);
        int[] types = new int[n];
        for (int i = 0; i < n; i++) {
            String token = byId.get((long) i);
            if (token == null) {
                tokens.add("[PAD" + i + "]");
                types[i] = UNUSED;
            } else if (addedSpecial.containsKey((long) i)) {
                Added a = addedSpecial.get((long) i);
                if (!Boolean.TRUE.equals(a.normalized)) {
                    token = decodedBack(f, i, token, a.normalized == null);
                }
                if (a.special || looksSpecial(token)) {
                    types[i] = CONTROL;
                } else {
                    token = token.replace('\u2581', ' ');
                    types[i] = USER_DEFINED;
                }
                tokens.add(token);
            } else {
                types[i] = NORMAL;
                tokens.add(token);
            }
        }
        md.putString("tokenizer.ggml.model", "gpt2");
        md.putString("tokenizer.ggml.pre", pre);
        putTokens(md, tokens);
        if (n > 0) {
            md.putInt32Array("tokenizer.ggml.token_type", types);
        }
        SpecialVocab sv = new SpecialVocab(f, config, true, SpecialVocab.DEFAULT_TYPES, null);
        sv.ids.forEach((typ, id) -> {
            if (id >= n) {
                throw new Dequant4jException(Kind.CORRUPT_INPUT, typ + " token id " + id
                        + " (tokenizer_config.json/config.json) is not under the vocabulary size " + n);
            }
        });
        sv.addTo(md);
        return new Vocab(n);
    }

    /** An added token's flags; {@code normalized} is null where transformers' value is not known for certain. */
    private static final class Added {
        boolean special;
        Boolean normalized;

        Added(boolean special, Boolean normalized) {
            this.special = special;
            this.normalized = normalized;
        }
    }

    /** GPT-2's bytes_to_unicode, inverted: the byte each character of a byte-level token stands for, or -1. */
    private static final int[] BYTE_OF_CHAR = new int[324];

    static {
        Arrays.fill(BYTE_OF_CHAR, -1);
        int extra = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            BYTE_OF_CHAR[printable ? b : 256 + extra++] = b;
        }
    }

    /**
     * What the converter makes of a non-normalized added token, {@code decode(encode(token))}: tokenizers' ByteLevel
     * decoder maps a token whose every character is a byte-level character to those bytes (read as UTF-8) and leaves
     * any other token as it is, so {@code Ġa} becomes {@code " a"}. Bytes that are not UTF-8 (which the converter would
     * write as U+FFFD) are refused, and so is a change where transformers' normalized flag is not certain.
     */
    private static String decodedBack(TokenizerFiles f, int id, String token, boolean uncertain) {
        byte[] bytes = new byte[token.length()];
        for (int k = 0; k < token.length(); k++) {
            char c = token.charAt(k);
            int b = c < BYTE_OF_CHAR.length ? BYTE_OF_CHAR[c] : -1;
            if (b < 0) {
                return token;
            }
            bytes[k] = (byte) b;
        }
        String decoded;
        try {
            decoded = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw f.unsupported(TJ, "added token " + id + " '" + token + "' decodes to bytes that are not UTF-8 "
                    + "(the converter would write it with U+FFFD)");
        }
        if (uncertain && !decoded.equals(token)) {
            throw f.unsupported(TJ, "added token " + id + " '" + token + "' is named special by tokenizer_config.json "
                    + "while normalized; whether the converter decodes it to '" + decoded + "' is not certain");
        }
        return decoded;
    }

    /** tokenizer.json's added tokens and their flags; each joins the vocabulary. */
    private static Map<Long, Added> addedTokens(TokenizerFiles f, JsonObject tj, Map<Long, String> byId,
                                                Map<String, Long> byToken) {
        Map<Long, Added> special = new HashMap<>();
        JsonValue list = tj.get("added_tokens");
        if (list == null) {
            return special;
        }
        for (JsonValue at : f.list(TJ, list, "added_tokens").values()) {
            long id = tokenId(f, TJ, f.get(TJ, at, "id"), "added token");
            String content = content(f, TJ, at, "added token " + id);
            String had = byId.putIfAbsent(id, content);
            Long hadId = byToken.putIfAbsent(content, id);
            if ((had != null && !had.equals(content)) || (hadId != null && hadId != id)) {
                throw f.corrupt(TJ, "added token " + id + " '" + content + "' clashes with the vocabulary");
            }
            JsonValue sp = f.get(TJ, at, "special");
            if (sp != null && !(sp instanceof JsonBoolean)) {
                throw f.corrupt(TJ, "added token " + id + ": special must be a boolean");
            }
            if (!(f.get(TJ, at, "normalized") instanceof JsonBoolean normalized)) {
                throw f.corrupt(TJ, "added token " + id + ": normalized must be a boolean");
            }
            if (special.put(id, new Added(truthy(sp), normalized.value())) != null) {
                throw f.corrupt(TJ, "added token id " + id + " is listed twice");
            }
        }
        return special;
    }

    /**
     * The special tokens transformers 5 makes of what tokenizer_config.json names: each of bos_token ... mask_token,
     * extra_special_tokens, and additional_special_tokens when there is no extra_special_tokens, becomes a special
     * added token (so the converter types it CONTROL), and one tokenizer.json lacks would be added to the vocabulary,
     * which is refused. special_tokens_map.json counts only for keys tokenizer_config.json does not have, and
     * additional_special_tokens next to extra_special_tokens not at all (as transformers 5.17 loads them); since
     * that is less certain, such a name must already be a special added token, or it is refused.
     */
    private static void markNamedSpecials(TokenizerFiles f, Map<String, Long> byToken, Map<Long, Added> added) {
        JsonObject tc = f.json(TC);
        JsonObject stm = f.json("special_tokens_map.json");
        List<String> keys = new ArrayList<>();
        SpecialVocab.DEFAULT_TYPES.forEach(t -> keys.add(t + "_token"));
        keys.add("extra_special_tokens");
        keys.add("additional_special_tokens");
        for (String key : keys) {
            boolean inTc = tc != null && tc.has(key);
            boolean shadowed = key.equals("additional_special_tokens") && tc != null && tc.has("extra_special_tokens");
            if (inTc && !shadowed) {
                for (String name : named(f, TC, tc.get(key), key)) {
                    promote(added, need(f, TC, byToken, name));
                }
            }
            String file = inTc ? TC : "special_tokens_map.json";
            JsonValue uncertain = inTc ? (shadowed ? tc.get(key) : null) : stm == null ? null : stm.get(key);
            for (String name : named(f, file, uncertain, key)) {
                Added a = added.get(need(f, file, byToken, name));
                if (a == null || !a.special) {
                    throw f.unsupported(file, key + " names '" + name + "', which is not a special added token of "
                            + "tokenizer.json (whether transformers makes it one is not certain)");
                }
            }
        }
    }

    /** The default special tokens of the tokenizer classes' {@code __init__} (transformers 5.17), by type. */
    private static final Map<String, Map<String, String>> CLASS_DEFAULTS = Map.of(
            "TokenizersBackend", Map.of(),
            "LlamaTokenizer", Map.of("bos", "<s>", "eos", "</s>", "unk", "<unk>"),
            "Qwen2Tokenizer", Map.of("eos", "<|endoftext|>", "unk", "<|endoftext|>", "pad", "<|endoftext|>"),
            "GemmaTokenizer", Map.of("bos", "<bos>", "eos", "<eos>", "unk", "<unk>", "pad", "<pad>", "mask", "<mask>"),
            "GPT2Tokenizer", Map.of("bos", "<|endoftext|>", "eos", "<|endoftext|>", "unk", "<|endoftext|>"));

    /** AutoTokenizer's class for a model_type without a tokenizer_class ({@code TOKENIZER_MAPPING_NAMES}). */
    private static final Map<String, String> REGISTERED = Map.of(
            "qwen2", "Qwen2Tokenizer", "qwen3", "Qwen2Tokenizer", "gemma2", "GemmaTokenizer",
            "gemma3", "GemmaTokenizer", "gemma3_text", "GemmaTokenizer",
            "mistral", "TokenizersBackend", "phi3", "TokenizersBackend");

    /**
     * The tokenizer class transformers 5.17's {@code AutoTokenizer.from_pretrained} instantiates for a directory with
     * tokenizer.json: tokenizer_config.json's (else config.json's) tokenizer_class, except that where the model_type
     * has a registered class of its own and the named one differs, the registered class wins for model types transformers
     * lists as having a wrong hub class (qwen2, phi3) and a generic named class becomes TokenizersBackend. llama has no
     * registered class; mistral's (MistralCommonBackend without Mistral-format files) and phi3's are TokenizersBackend.
     */
    static String tokenizerClass(TokenizerFiles f, JsonObject config) {
        JsonObject tc = f.json(TC);
        String hub = tc == null ? null : str(tc.get("tokenizer_class"));
        if (hub == null && config != null) {
            hub = str(config.get("tokenizer_class"));
        }
        if (tc != null && tc.has("auto_map")) {
            throw f.unsupported(TC, "has an auto_map (a remote-code tokenizer): which tokenizer class transformers "
                    + "loads, and so its default special tokens, is not certain");
        }
        String modelType = config == null ? null : str(config.get("model_type"));
        if (!"llama".equals(modelType) && !REGISTERED.containsKey(modelType)) {
            throw new Dequant4jException(Kind.UNSUPPORTED_INPUT, "config.json: model_type " + modelType + ": which "
                    + "tokenizer class transformers loads for it (and so its default special tokens) is not known");
        }
        String registered = REGISTERED.get(modelType);
        if (hub != null && registered != null && !registered.equals(hub.replaceFirst("Fast$", ""))) {
            if (registered.equals("TokenizersBackend")) {
                return registered;
            }
            return modelType.equals("qwen2") ? registered : className(f, hub);
        }
        return hub != null ? className(f, hub) : registered != null ? registered : "TokenizersBackend";
    }

    /** {@code tokenizer_class_from_name}, for the classes whose defaults are known; any other is refused. */
    private static String className(TokenizerFiles f, String name) {
        String n = name.replaceFirst("Fast$", "");
        if (n.equals("PreTrainedTokenizer") || n.equals("PreTrainedTokenizerFast") || n.equals("PythonBackend")) {
            return "TokenizersBackend";
        }
        if (!CLASS_DEFAULTS.containsKey(n)) {
            throw f.unsupported(TC, "tokenizer_class " + name + ": its default special tokens (which transformers "
                    + "would make special or add to the vocabulary) are not known; known: " + CLASS_DEFAULTS.keySet());
        }
        return n;
    }

    /**
     * The tokenizer class's default special tokens, for each type whose key neither tokenizer_config.json nor
     * special_tokens_map.json has (an explicit null turns the default off): transformers makes one in the vocabulary a
     * special added token, and adds one it lacks as a new special token at the next id, which the converter types
     * CONTROL (as Qwen2Tokenizer adds {@code <|endoftext|>} to a tokenizer without it). More than one missing token is
     * refused (their order is not checked against the converter).
     */
    private static void classDefaults(TokenizerFiles f, JsonObject config, Map<Long, String> byId,
                                      Map<String, Long> byToken, Map<Long, Added> added) {
        JsonObject tc = f.json(TC);
        JsonObject stm = f.json("special_tokens_map.json");
        String cls = tokenizerClass(f, config);
        Map<String, String> defaults = CLASS_DEFAULTS.get(cls);
        List<String> missing = new ArrayList<>();
        for (String typ : SpecialVocab.DEFAULT_TYPES) {
            String token = defaults.get(typ);
            String key = typ + "_token";
            if (token == null || tc != null && tc.has(key) || stm != null && stm.has(key)) {
                continue;
            }
            Long id = byToken.get(token);
            if (id != null) {
                promote(added, id);
            } else if (!missing.contains(token)) {
                missing.add(token);
            }
        }
        if (missing.size() > 1) {
            throw f.unsupported(TC, cls + " (the class transformers loads) would add its default special tokens "
                    + missing + " to the vocabulary; more than one is not supported");
        }
        if (missing.size() == 1) {
            long next = byId.size();
            if (byId.containsKey(next) || byId.keySet().stream().anyMatch(i -> i > next)) {
                throw f.unsupported(TJ, "the token ids have gaps; where " + cls + " would add its default special "
                        + "token '" + missing.getFirst() + "' is not known");
            }
            byId.put(next, missing.getFirst());
            byToken.put(missing.getFirst(), next);
            added.put(next, new Added(true, false));
        }
    }

    /**
     * A named special token: transformers adds a vocabulary token as a special, non-normalized AddedToken; what it
     * does to the normalized flag of a token already added normalized is not known, so that becomes uncertain.
     */
    private static void promote(Map<Long, Added> added, long id) {
        Added a = added.get(id);
        if (a == null) {
            added.put(id, new Added(true, false));
        } else {
            a.special = true;
            if (Boolean.TRUE.equals(a.normalized)) {
                a.normalized = null;
            }
        }
    }

    /** The token names of a special-token entry: a name, an AddedToken object, or a list or object of them. */
    private static List<String> named(TokenizerFiles f, String file, JsonValue v, String key) {
        List<String> names = new ArrayList<>();
        if (v == null || v == JsonNull.NULL) {
            return names;
        }
        List<JsonValue> entries = !key.endsWith("special_tokens") ? List.of(v)
                : v instanceof JsonObject m ? List.copyOf(m.members().values()) : f.list(file, v, key).values();
        for (JsonValue e : entries) {
            String name = namedToken(f, file, e);
            if (name != null) {
                names.add(name);
            }
        }
        return names;
    }

    private static String namedToken(TokenizerFiles f, String file, JsonValue v) {
        if (v == null || v == JsonNull.NULL) {
            return null;
        }
        String s = str(v);
        if (s == null && v instanceof JsonObject o) {
            s = str(o.get("content"));
        }
        if (s == null) {
            throw f.corrupt(file, "a special token entry is neither a string nor an object with a content string");
        }
        return s.isEmpty() ? null : s;
    }

    private static long need(TokenizerFiles f, String file, Map<String, Long> byToken, String name) {
        Long id = byToken.get(name);
        if (id == null) {
            throw f.unsupported(file, "names the special token '" + name + "', which tokenizer.json does not have "
                    + "(transformers would add it to the vocabulary)");
        }
        return id;
    }

    /** tokenizer_config.json's added_tokens_decoder must say what tokenizer.json's added tokens say. */
    private static void checkAddedTokensDecoder(TokenizerFiles f, Map<Long, Added> added, Map<Long, String> byId) {
        JsonObject tc = f.json(TC);
        if (tc == null) {
            return;
        }
        JsonObject decoder = decoderOf(f, tc);
        for (String key : decoder.keys()) {
            long id = decimalId(f, key);
            JsonValue data = decoder.get(key);
            String content = content(f, TC, data, "added_tokens_decoder[" + key + "]");
            boolean special = truthy(f.get(TC, data, "special"));
            if (!content.equals(byId.get(id)) || !added.containsKey(id) || added.get(id).special != special) {
                throw f.unsupported(TC, "added_tokens_decoder[" + key + "] '" + content + "' (special " + special
                        + ") differs from tokenizer.json's added tokens");
            }
        }
    }

    private static void checkAddedTokensJson(TokenizerFiles f, Map<String, Long> byToken) {
        JsonObject added = f.json("added_tokens.json");
        if (added == null) {
            return;
        }
        for (String key : added.keys()) {
            long id = tokenId(f, "added_tokens.json", added.get(key), key);
            if (!Long.valueOf(id).equals(byToken.get(key))) {
                throw f.unsupported("added_tokens.json", "'" + key + "' -> " + id + " is not in tokenizer.json");
            }
        }
    }

    /**
     * llama.cpp's pre-tokenizer name from tokenizer.json's own normalizer/pre_tokenizer/decoder: a byte-level BPE
     * that splits with the regex llama.cpp implements under that name (llama-vocab.cpp), or GPT-2's own ByteLevel.
     */
    static String preTokenizer(TokenizerFiles f, JsonObject tj) {
        String normalizer = layoutType(f, tj.get("normalizer"));
        String decoder = layoutType(f, tj.get("decoder"));
        if (!"ByteLevel".equals(decoder)) {
            throw f.unsupported(TJ, "decoder " + decoder + " is not ByteLevel; not a byte-level BPE llama.cpp reads");
        }
        JsonValue pt = tj.get("pre_tokenizer");
        String ptType = layoutType(f, pt);
        String name = null;
        if ("ByteLevel".equals(ptType) && isByteLevel(pt, true) && normalizer == null) {
            name = "gpt-2";
        } else if ("Sequence".equals(ptType)) {
            JsonValue list = f.get(TJ, pt, "pretokenizers");
            List<JsonValue> steps = list == null ? List.of() : f.list(TJ, list, "pre_tokenizer.pretokenizers").values();
            if (steps.size() == 2 && isByteLevel(steps.get(1), false)
                    && steps.getFirst() instanceof JsonObject split && "Split".equals(str(split.get("type")))
                    && "Isolated".equals(str(split.get("behavior"))) && split.get("invert") == JsonBoolean.FALSE
                    && split.get("pattern") instanceof JsonObject p && p.size() == 1) {
                String regex = str(p.get("Regex"));
                String n = regex == null ? null : SPLIT_REGEXES.get(regex);
                if ("llama-bpe".equals(n) && normalizer == null
                        || "qwen2".equals(n) && (normalizer == null || normalizer.equals("NFC"))) {
                    name = n;
                }
            }
        }
        if (name == null) {
            throw f.unsupported(TJ, "unknown BPE pre-tokenizer (normalizer " + normalizer + ", pre_tokenizer "
                    + describe(pt) + "); known: the Llama 3 and Qwen2 split regexes with ByteLevel, GPT-2's ByteLevel");
        }
        return name;
    }

    private static boolean isByteLevel(JsonValue v, boolean useRegex) {
        return v instanceof JsonObject o && "ByteLevel".equals(str(o.get("type")))
                && o.get("add_prefix_space") == JsonBoolean.FALSE
                && (o.get("use_regex") == null ? useRegex : o.get("use_regex") == JsonBoolean.of(useRegex));
    }

    private static String layoutType(TokenizerFiles f, JsonValue v) {
        if (v == null || v == JsonNull.NULL) {
            return null;
        }
        String t = str(f.get(TJ, v, "type"));
        if (t == null) {
            throw f.corrupt(TJ, "a normalizer, pre_tokenizer or decoder has no type");
        }
        return t;
    }

    private static String describe(JsonValue pt) {
        if (pt == null || pt == JsonNull.NULL) {
            return "null";
        }
        String s = Json.write(pt, Json.Style.COMPACT);
        return Json.abbreviate(s, 160);
    }
}

package dev.dequant4j.internal.gguf;

import static dev.dequant4j.internal.gguf.TokenizerFiles.integer;
import static dev.dequant4j.internal.gguf.TokenizerFiles.str;
import static dev.dequant4j.internal.gguf.TokenizerFiles.truthy;

import dev.dequant4j.internal.json.JsonArray;
import dev.dequant4j.internal.json.JsonBoolean;
import dev.dequant4j.internal.json.JsonNull;
import dev.dequant4j.internal.json.JsonObject;
import dev.dequant4j.internal.json.JsonString;
import dev.dequant4j.internal.json.JsonValue;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * gguf-py's {@code SpecialVocab} (vocab.py at llama.cpp 81ff7ab), statement for statement: merges from tokenizer.json
 * (or merges.txt), special token ids from tokenizer_config.json (looked up in tokenizer.json's added tokens) and then
 * config.json, add_bos/add_eos/add_sep from the post-processor and tokenizer_config.json, the chat template (from
 * tokenizer_config.json, chat_template.jinja or chat_template.json) and the normalizer's lowercase/strip_accents, and
 * {@link #addTo} writes them in the order and with the types {@code add_to_gguf} does.
 */
final class SpecialVocab {
    private static final String TJ = "tokenizer.json";
    private static final String TC = "tokenizer_config.json";
    static final List<String> DEFAULT_TYPES = List.of("bos", "eos", "unk", "sep", "pad", "cls", "mask");
    /** The token types gguf-py's writer has an {@code add_<type>_token_id} for, and their keys. */
    private static final Map<String, String> ID_KEYS = Map.of(
            "bos", "tokenizer.ggml.bos_token_id", "eos", "tokenizer.ggml.eos_token_id",
            "unk", "tokenizer.ggml.unknown_token_id", "sep", "tokenizer.ggml.seperator_token_id",
            "pad", "tokenizer.ggml.padding_token_id", "mask", "tokenizer.ggml.mask_token_id",
            "eot", "tokenizer.ggml.eot_token_id", "eom", "tokenizer.ggml.eom_token_id");
    private static final Map<String, String> ADD_KEYS = Map.of(
            "bos", "tokenizer.ggml.add_bos_token", "eos", "tokenizer.ggml.add_eos_token",
            "sep", "tokenizer.ggml.add_sep_token");

    private final TokenizerFiles f;
    private final boolean loadMerges;
    private final Long nVocab;
    private final List<String> types;
    final List<String> merges = new ArrayList<>();
    final Map<String, Long> ids = new LinkedHashMap<>();
    final Map<String, Boolean> add = new LinkedHashMap<>();
    /** None (null), a str, or a list of {name, template} objects. */
    JsonValue chatTemplate;
    private Boolean lowercase;
    private Boolean stripAccents;

    SpecialVocab(TokenizerFiles f, JsonObject config, boolean loadMerges, List<String> types, Long nVocab) {
        this.f = f;
        this.loadMerges = loadMerges;
        this.nVocab = nVocab;
        this.types = new ArrayList<>(types);
        loadFromTokenizerJson();
        loadFromConfigJson(config);
        if (loadMerges && merges.isEmpty()) {
            loadMergesTxt();
        }
    }

    /** {@code _set_special_token}: the first id for a type wins; ids past {@code n_vocab} are skipped. */
    void setSpecialToken(String typ, JsonValue tid, String file) {
        Long id = integer(tid);
        if (id == null) {
            if (tid instanceof JsonBoolean) {
                throw f.corrupt(file, typ + " token id is a boolean");
            }
            return;
        }
        if (id < 0) {
            throw f.corrupt(file, "invalid value for special token type " + typ + ": " + id);
        }
        if (nVocab == null || id < nVocab) {
            ids.putIfAbsent(typ, id);
        }
    }

    /** {@code add_to_gguf}. */
    void addTo(GgufMetadata md) {
        if (!merges.isEmpty()) {
            md.putStringArray("tokenizer.ggml.merges", merges);
        }
        ids.forEach((typ, id) -> {
            String key = ID_KEYS.get(typ);
            if (key != null) {
                md.putUint32(key, id);
            }
        });
        add.forEach((typ, v) -> {
            String key = ADD_KEYS.get(typ);
            if (key != null) {
                md.putBool(key, v);
            }
        });
        if (chatTemplate != null) {
            addChatTemplate(md);
        }
        if (lowercase != null) {
            md.putBool("tokenizer.ggml.normalizer.lowercase", lowercase);
        }
        if (stripAccents != null) {
            md.putBool("tokenizer.ggml.normalizer.strip_accents", stripAccents);
        }
    }

    /** gguf-py's {@code add_chat_template}; an empty template is not written ({@code add_string} skips it). */
    private void addChatTemplate(GgufMetadata md) {
        String value;
        if (chatTemplate instanceof JsonString s) {
            value = s.value();
        } else {
            String def = null;
            List<String> names = new ArrayList<>();
            for (JsonValue choice : ((JsonArray) chatTemplate).values()) {
                String rawName = str(f.get(TC, choice, "name"));
                JsonValue template = f.get(TC, choice, "template");
                StringBuilder name = new StringBuilder();
                (rawName == null ? "" : rawName).codePoints().forEach(c -> name.append(
                        c < 128 && Character.isLetterOrDigit(c) ? Character.toString(c) : "_"));
                if (!name.isEmpty() && template != null) {
                    String t = str(template);
                    if (t == null) {
                        throw f.corrupt(TC, "chat template '" + name + "' is not a string");
                    }
                    if (name.toString().equals("default")) {
                        def = t;
                    } else {
                        names.add(name.toString());
                        if (!t.isEmpty()) {
                            md.putString("tokenizer.chat_template." + name, t);
                        }
                    }
                }
            }
            // The converter lists the names from a Python set, whose order changes from run to run.
            if (names.stream().distinct().count() > 1) {
                throw f.unsupported(TC, "more than one named chat template (the converter's order of "
                        + "tokenizer.chat_templates is not deterministic)");
            }
            if (!names.isEmpty()) {
                md.putStringArray("tokenizer.chat_templates", List.of(names.getFirst()));
            }
            if (def == null) {
                return;
            }
            value = def;
        }
        if (!value.isEmpty()) {
            md.putString("tokenizer.chat_template", value);
        }
    }

    private void loadMergesTxt() {
        if (!f.has("merges.txt")) {
            return;
        }
        String[] lines = f.text("merges.txt").split("\n", -1);
        int first = lines.length > 0 && lines[0].strip().startsWith("#") ? 1 : 0;
        for (int i = first; i < lines.length; i++) {
            String line = lines[i].strip();
            if (line.isEmpty()) {
                continue;
            }
            String[] parts = line.split("\\s+");
            if (parts.length != 2) {
                throw f.corrupt("merges.txt", "line " + (i + 1) + " is not a pair");
            }
            merges.add(parts[0] + " " + parts[1]);
        }
    }

    private void parseNormalizer(JsonValue normalizer) {
        String type = str(f.get(TJ, normalizer, "type"));
        if (type == null) {
            return;
        }
        switch (type) {
            case "Lowercase" -> lowercase = true;
            case "StripAccents" -> stripAccents = true;
            case "BertNormalizer" -> {
                JsonObject o = (JsonObject) normalizer;
                if (o.has("lowercase")) {
                    lowercase = bool(o.get("lowercase"), "normalizer.lowercase");
                }
                if (o.has("strip_accents")) {
                    stripAccents = bool(o.get("strip_accents"), "normalizer.strip_accents");
                }
            }
            case "Sequence" -> {
                JsonValue list = f.get(TJ, normalizer, "normalizers");
                if (list != null) {
                    for (JsonValue n : f.list(TJ, list, "normalizer.normalizers").values()) {
                        parseNormalizer(n);
                    }
                }
            }
            default -> { }
        }
    }

    private Boolean bool(JsonValue v, String what) {
        if (v instanceof JsonBoolean b) {
            return b.value();
        }
        // strip_accents is null in BERT's own files; gguf-py would write that None as a bool and fail.
        throw f.unsupported(TJ, what + " is " + v.typeName() + ", not a boolean");
    }

    private void loadFromTokenizerJson() {
        JsonObject tokenizer = f.json(TJ);
        JsonArray addedTokens = new JsonArray(List.of());
        if (tokenizer != null) {
            if (loadMerges) {
                loadMerges(tokenizer);
            }
            JsonValue normalizer = tokenizer.get("normalizer");
            if (truthy(normalizer)) {
                parseNormalizer(normalizer);
            }
            JsonValue at = tokenizer.get("added_tokens");
            if (at != null && !(at instanceof JsonObject o && o.size() == 0)) {
                addedTokens = f.list(TJ, at, "added_tokens");
            }
        }
        JsonObject tcFile = f.json(TC);
        Map<String, JsonValue> tc = tcFile == null ? null : new LinkedHashMap<>(tcFile.members());
        if (tokenizer != null) {
            postProcessor(tokenizer, tc);
        }
        if (tc == null || tc.isEmpty()) {
            return;
        }
        chatTemplate(tc);
        for (String typ : List.copyOf(types)) {
            JsonValue addEntry = tc.get("add_" + typ + "_token");
            if (addEntry instanceof JsonBoolean b) {
                add.put(typ, b.value());
            }
            JsonValue entry = tc.get(typ + "_token");
            String content;
            if (entry instanceof JsonString s) {
                content = s.value();
            } else if (entry instanceof JsonObject o) {
                content = str(o.get("content"));
                if (content == null) {
                    continue;
                }
            } else {
                continue;
            }
            JsonValue id = null;
            for (JsonValue atok : addedTokens.values()) {
                if (content.equals(str(f.get(TJ, atok, "content")))) {
                    id = f.get(TJ, atok, "id");
                    break;
                }
            }
            setSpecialToken(typ, id, TC);
        }
    }

    private void loadMerges(JsonObject tokenizer) {
        JsonValue model = tokenizer.get("model");
        JsonValue m = model == null ? null : f.get(TJ, model, "merges");
        if (!(m instanceof JsonArray list) || list.size() == 0) {
            return;
        }
        boolean strings = list.get(0) instanceof JsonString;
        for (JsonValue v : list.values()) {
            if (strings && v instanceof JsonString s) {
                merges.add(s.value());
            } else if (!strings && v instanceof JsonArray pair && pair.size() == 2
                    && pair.get(0) instanceof JsonString a && pair.get(1) instanceof JsonString b) {
                // transformers >= 4.45 writes [a, b] pairs so that parts may hold spaces; gguf-py joins them with
                // a space and writes each space inside a part as U+0120.
                merges.add(a.value().replace(' ', '\u0120') + " " + b.value().replace(' ', '\u0120'));
            } else {
                throw f.corrupt(TJ, "merge " + merges.size() + " is neither a string nor a pair of strings like the first");
            }
        }
    }

    private void chatTemplate(Map<String, JsonValue> tc) {
        JsonValue alt = null;
        if (f.has("chat_template.jinja")) {
            alt = new JsonString(f.text("chat_template.jinja"));
            Path extra = f.path("chat_template.jinja").resolveSibling("additional_chat_templates");
            if (Files.isDirectory(extra) && hasJinja(extra)) {
                throw f.unsupported("chat_template.jinja", "additional_chat_templates/ is not supported");
            }
        } else if (f.has("chat_template.json")) {
            JsonValue v = f.json("chat_template.json").get("chat_template");
            alt = v == JsonNull.NULL ? null : v;
        }
        JsonValue ct = tc.containsKey("chat_template") ? tc.get("chat_template") : alt;
        if (ct == JsonNull.NULL) {
            ct = null;
        }
        if (ct == null || ct instanceof JsonString || ct instanceof JsonArray) {
            chatTemplate = ct;
        }
    }

    private static boolean hasJinja(Path dir) {
        try (var s = Files.list(dir)) {
            return s.anyMatch(p -> p.getFileName().toString().endsWith(".jinja"));
        } catch (IOException e) {
            return true;
        }
    }

    private JsonValue specialId(JsonValue item) {
        JsonValue st = f.get(TJ, item, "SpecialToken");
        return st == null ? null : f.get(TJ, st, "id");
    }

    private JsonValue sequenceId(JsonValue item) {
        JsonValue seq = f.get(TJ, item, "Sequence");
        return seq == null ? null : f.get(TJ, seq, "id");
    }

    private static boolean eq(JsonValue a, JsonValue b) {
        return a == null ? b == null : a.equals(b);
    }

    /** The post-processor part of {@code _try_load_from_tokenizer_json}; {@code tc} is changed as it is there. */
    private void postProcessor(JsonObject tokenizer, Map<String, JsonValue> tc) {
        boolean hasTc = tc != null && !tc.isEmpty();
        JsonValue specialBos = tc == null ? null : tc.get("bos_token");
        JsonValue specialCls = tc == null ? null : tc.get("cls_token");
        JsonValue specialEos = tc == null ? null : tc.get("eos_token");
        JsonValue specialSep = tc == null ? null : tc.get("sep_token");
        if (!truthy(specialBos) && truthy(specialCls) && hasTc) {
            tc.put("bos_token", specialCls);
            specialBos = specialCls;
        }
        if (!truthy(specialEos) && truthy(specialSep) && hasTc) {
            tc.put("eos_token", specialSep);
            specialEos = specialSep;
        }
        JsonValue pp = tokenizer.get("post_processor");
        if (!truthy(pp)) {
            return;
        }
        JsonValue procs = f.get(TJ, pp, "processors");
        List<JsonValue> processors = procs == null ? List.of(pp) : f.list(TJ, procs, "post_processor.processors").values();
        for (JsonValue processor : processors) {
            String type = str(f.get(TJ, processor, "type"));
            if ("RobertaProcessing".equals(type)) {
                add.put("bos", true);
                add.put("eos", true);
                add.put("sep", true);
                if (!truthy(specialCls) && hasTc) {
                    JsonValue cls = f.get(TJ, processor, "cls");
                    specialCls = cls == null ? specialBos : first(cls);
                    tc.put("cls_token", specialCls);
                }
                if (!truthy(specialSep) && hasTc) {
                    JsonValue sep = f.get(TJ, processor, "sep");
                    specialSep = sep == null ? specialEos : first(sep);
                    tc.put("sep_token", specialSep);
                }
                continue;
            }
            if (!"TemplateProcessing".equals(type)) {
                continue;
            }
            JsonValue single = f.get(TJ, processor, "single");
            JsonValue pair = f.get(TJ, processor, "pair");
            List<JsonValue> tmplSingle = single == null ? List.of() : f.list(TJ, single, "single").values();
            List<JsonValue> tmplPair = pair == null ? List.of() : f.list(TJ, pair, "pair").values();
            JsonValue specialFirst = null;
            JsonValue specialLast = null;
            if (tmplSingle.size() > 1) {
                specialFirst = specialId(tmplSingle.getFirst());
                if (truthy(specialFirst)) {
                    boolean known = eq(specialFirst, specialBos) || eq(specialFirst, specialCls);
                    if (!hasTc) {
                        specialBos = specialFirst;
                    } else if (!known) {
                        if (!truthy(specialBos)) {
                            tc.put("bos_token", specialFirst);
                            specialBos = specialFirst;
                        }
                        if (!truthy(specialCls)) {
                            tc.put("cls_token", specialFirst);
                            specialCls = specialFirst;
                        }
                    }
                    add.put("bos", eq(specialFirst, specialBos) || eq(specialFirst, specialCls));
                }
                specialLast = specialId(tmplSingle.getLast());
                if (truthy(specialLast)) {
                    if (!hasTc) {
                        specialEos = specialLast;
                    } else if (!eq(specialLast, specialEos)) {
                        if (!types.contains("eot")) {
                            types.add("eot");
                            tc.put("eot_token", specialEos == null ? JsonNull.NULL : specialEos);
                        } else if (!types.contains("eom")) {
                            types.add("eom");
                            tc.put("eom_token", specialEos == null ? JsonNull.NULL : specialEos);
                        }
                        tc.put("eos_token", specialLast);
                        specialEos = specialLast;
                    }
                    add.put("eos", eq(specialLast, specialEos));
                }
            }
            if (!tmplPair.isEmpty()) {
                int start = truthy(specialFirst) && eq(specialId(tmplPair.getFirst()), specialFirst) ? 1 : 0;
                int stop = truthy(specialLast) && eq(specialId(tmplPair.getLast()), specialLast)
                        ? tmplPair.size() - 1 : tmplPair.size();
                tmplPair = start < stop ? tmplPair.subList(start, stop) : List.of();
                if (!tmplPair.isEmpty()) {
                    JsonValue a = sequenceId(tmplPair.getFirst());
                    JsonValue b = sequenceId(tmplPair.getLast());
                    List<JsonValue> middle = tmplPair.size() > 2 ? tmplPair.subList(1, tmplPair.size() - 1) : List.of();
                    if ("A".equals(str(a)) && "B".equals(str(b)) && !middle.isEmpty()) {
                        boolean addSep = false;
                        JsonValue entry = specialId(middle.getFirst());
                        if (truthy(entry) && (eq(entry, specialSep) || eq(entry, specialEos)) && !truthy(specialLast)) {
                            addSep = true;
                        }
                        if (middle.size() == 2) {
                            entry = specialId(middle.get(1));
                            if (truthy(entry) && (eq(entry, specialSep) || eq(entry, specialEos))) {
                                addSep = true;
                            }
                        }
                        add.put("sep", addSep);
                        if (addSep && !truthy(specialSep) && hasTc) {
                            tc.put("sep_token", specialEos == null ? JsonNull.NULL : specialEos);
                        }
                    }
                }
            }
        }
    }

    private JsonValue first(JsonValue list) {
        JsonArray a = f.list(TJ, list, "post_processor cls/sep");
        if (a.size() == 0) {
            throw f.corrupt(TJ, "post_processor cls/sep is empty");
        }
        return a.get(0);
    }

    private void loadFromConfigJson(JsonObject config) {
        if (config == null) {
            return;
        }
        for (String typ : types) {
            JsonValue id = config.get(typ + "_token_id");
            if ((id == null || id == JsonNull.NULL) && config.get("text_config") instanceof JsonObject text) {
                id = text.get(typ + "_token_id");
            }
            setSpecialToken(typ, id, "config.json");
        }
    }
}

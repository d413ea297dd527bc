"""Writes a Llama-3-shaped byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) into DIR.

Usage: python make_llama3_tokenizer.py DIR [--seed N]

For benchmarks only: the big generated checkpoints (tools/peer/make_big_checkpoint.py) have no tokenizer, and a GGUF
file holds the vocabulary, so `export --format gguf` and convert_hf_to_gguf.py both need one. This one has Llama 3's
sizes and layout, not its tokens: ids 0-255 the ByteLevel alphabet, then 127,744 pseudo-random merges of existing
tokens (each merge's result is the next id, as BPE training numbers them), 256 special tokens 128000-128255 named as
Llama 3 names them, the Llama 3 split regex, ByteLevel decoding and a TemplateProcessing that adds
<|begin_of_text|>. Deterministic for a given seed.
"""
import json
import os
import random
import sys

BASE_VOCAB = 128000
SPECIALS = 256
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def special_names():
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
             "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|start_header_id|>",
             "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    k = 5
    while len(names) < SPECIALS:
        names.append("<|reserved_special_token_%d|>" % k)
        k += 1
    return names


def main(out, seed=17):
    rnd = random.Random(seed)
    tokens = byte_alphabet()
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    while len(tokens) < BASE_VOCAB:
        # short tokens merge more often, as in trained vocabularies
        a = tokens[min(int(rnd.expovariate(1 / 3000)), len(tokens) - 1)]
        b = tokens[min(int(rnd.expovariate(1 / 3000)), len(tokens) - 1)]
        if a + b in vocab or len(a + b) > 16:
            continue
        vocab[a + b] = len(tokens)
        tokens.append(a + b)
        merges.append(a + " " + b)
    added = [{"id": BASE_VOCAB + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(special_names())]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [BASE_VOCAB],
                                                                    "tokens": ["<|begin_of_text|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "model_max_length": 8192,
           "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True,
           "model_input_names": ["input_ids", "attention_mask"],
           "chat_template": "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                            "{{ m['content'] }}<|eot_id|>{% endfor %}",
           "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added}}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    print(len(vocab) + len(added), "tokens,", len(merges), "merges")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--seed" else 17)

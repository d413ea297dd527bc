#!/usr/bin/env python3
"""Makes the large and hostile inputs of docs/RELIABILITY.md's measurements (issue 13, classes 8 and 9), with the
standard library only. Nothing it makes is committed: run it into a scratch directory.

  make_hostile_inputs.py header DIR BYTES [TENSORS]  a model dir whose model.safetensors has a valid header of exactly
                                                     BYTES bytes: TENSORS (default: as many as fit) F16 [1] tensors
  make_hostile_inputs.py rank DIR RANK               an adapter for examples/tiny-llama-nf4 whose q_proj LoRA claims
                                                     rank RANK; its weights file is sparse (the data is a hole)
  make_hostile_inputs.py patterns DIR KEYS           an adapter whose adapter_config.json has KEYS rank_pattern keys
"""
import json
import os
import struct
import sys


def write_safetensors(path, entries, data_bytes, header_bytes=None):
    """entries: (name, dtype, shape, nbytes); the header padded with spaces to header_bytes when given."""
    header = {}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    if header_bytes is not None:
        if len(text) > header_bytes:
            raise SystemExit(f"{len(text)} bytes of header do not fit in {header_bytes}")
        text += b" " * (header_bytes - len(text))
    assert data_bytes == offset
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        # sparse: the data is a hole of zeros
        f.truncate(8 + len(text) + data_bytes)


def header(out, size, tensors=None):
    os.makedirs(out, exist_ok=True)
    # as many entries "model.layers.N.w":{"dtype":"F16","shape":[1],"data_offsets":[a,b]} as fit, the rest spaces
    entries = []
    used = 2
    while tensors is None or len(entries) < tensors:
        i = len(entries)
        n = len(f'"model.layers.{i}.w":{{"dtype":"F16","shape":[1],"data_offsets":[{2 * i},{2 * i + 2}]}}') + 1
        if tensors is None and used + n > size:
            break
        entries.append((f"model.layers.{i}.w", "F16", [1], 2))
        used += n
    tensors = len(entries)
    write_safetensors(os.path.join(out, "model.safetensors"), entries, 2 * tensors, size)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "torch_dtype": "float16"}, f)


def adapter_config(r, rank_pattern=None):
    return {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj"],
            "rank_pattern": rank_pattern or {}, "alpha_pattern": {}, "fan_in_fan_out": False,
            "use_dora": False, "use_rslora": False, "bias": "none", "base_model_name_or_path": "tiny-llama-nf4"}


def rank(out, r):
    os.makedirs(out, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    entries = [(prefix + ".lora_A.weight", "F16", [r, 64], 2 * r * 64),
               (prefix + ".lora_B.weight", "F16", [64, r], 2 * 64 * r)]
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), entries, 4 * r * 64)
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(adapter_config(r), f)


def patterns(out, keys):
    os.makedirs(out, exist_ok=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    entries = [(prefix + ".lora_A.weight", "F32", [8, 64], 4 * 8 * 64),
               (prefix + ".lora_B.weight", "F32", [64, 8], 4 * 64 * 8)]
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), entries, 2 * 4 * 8 * 64)
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(adapter_config(8, {f"layers.{i}.x": 8 for i in range(keys)}), f)


if __name__ == "__main__":
    cmd, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "header":
        header(out, n, int(sys.argv[4]) if len(sys.argv) > 4 else None)
    elif cmd == "rank":
        rank(out, n)
    elif cmd == "patterns":
        patterns(out, n)
    else:
        raise SystemExit(__doc__)

#!/usr/bin/env bash
# One-step bnb + LoRA -> GGUF (dequant4j) against the two-tool chain (dequant4j safetensors F16 export, then
# llama.cpp's convert_hf_to_gguf.py to F16, then llama-quantize Q4_K_M), each step under /usr/bin/time -v.
#
# Usage: scripts/bench/gguf_chain.sh MODEL_DIR ADAPTER_DIR WORK_DIR LLAMA_CPP [ROUNDS] [THREADS]
#   MODEL_DIR needs a tokenizer (scripts/bench/make_llama3_tokenizer.py makes a Llama-3-shaped one); LLAMA_CPP is a
#   built llama.cpp checkout (build/bin/llama-quantize); PYTHON (default python3) must have torch, transformers and
#   numpy; CLI (default target/dequant4j-cli.jar). Prints one TSV line per step and round:
#   round, step, wall s, user s, sys s, max RSS KiB, output bytes. Everything under WORK_DIR is removed after each round.
set -euo pipefail
MODEL=$1 ADAPTER=$2 WORK=$3 LLAMA_CPP=$4 ROUNDS=${5:-3} THREADS=${6:-2}
PYTHON=${PYTHON:-python3} CLI=${CLI:-target/dequant4j-cli.jar}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK"

step() { # round name output -- command...
  local round=$1 name=$2 out=$3; shift 4
  /usr/bin/time -v -o "$WORK/time.txt" "$@" > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; exit 1; }
  local wall user sys rss bytes
  wall=$(awk -F': ' '/Elapsed/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
  user=$(awk -F': ' '/User time/ {print $2}' "$WORK/time.txt")
  sys=$(awk -F': ' '/System time/ {print $2}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$WORK/time.txt")
  bytes=$(du -sb "$out" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$wall" "$user" "$sys" "$rss" "$bytes"
}

for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK"/st-f16 "$WORK"/g-f16 "$WORK"/g-q4km "$WORK"/c-*.gguf
  step "$r" d4j-safetensors-f16 "$WORK/st-f16" -- java -jar "$CLI" export "$MODEL" --adapter "$ADAPTER" \
      --out "$WORK/st-f16" --dtype f16 --threads "$THREADS"
  step "$r" d4j-gguf-f16 "$WORK/g-f16" -- java -jar "$CLI" export "$MODEL" --adapter "$ADAPTER" \
      --out "$WORK/g-f16" --format gguf --gguf-type f16 --threads "$THREADS"
  rm -rf "$WORK/g-f16"
  step "$r" d4j-gguf-q4_k_m "$WORK/g-q4km" -- java -jar "$CLI" export "$MODEL" --adapter "$ADAPTER" \
      --out "$WORK/g-q4km" --format gguf --gguf-type q4_k_m --threads "$THREADS"
  rm -rf "$WORK/g-q4km"
  # The converter names a BPE pre-tokenizer by hashing the token ids of a test string; a generated vocabulary
  # matches no known hash, so it is told "llama-bpe" (the split regex the tokenizer uses), as for our fixtures.
  step "$r" convert_hf_to_gguf-f16 "$WORK/c-f16.gguf" -- "$PYTHON" "$HERE/scripts/fixtures/make_gguf_llama.py" \
      convert "$WORK/st-f16" f16 "$WORK/c-f16.gguf" "$LLAMA_CPP"
  rm -rf "$WORK/st-f16"
  step "$r" llama-quantize-q4_k_m "$WORK/c-q4km.gguf" -- "$LLAMA_CPP/build/bin/llama-quantize" "$WORK/c-f16.gguf" \
      "$WORK/c-q4km.gguf" Q4_K_M "$THREADS"
  rm -f "$WORK"/c-*.gguf
done

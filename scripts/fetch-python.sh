#!/usr/bin/env bash
# Python packages the tests drive the node with: the official `openai` client (the gateway's
# compatibility test, rakis-node/tests/openai_client.rs). Installed with pip into .cache/python
# (used through PYTHONPATH; nothing is installed system-wide). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/.cache/python"
OPENAI_VERSION="3.57.0"
if [ -f "$DIR/openai-$OPENAI_VERSION.dist-info/METADATA" ]; then
  echo "python openai==$OPENAI_VERSION: present in $DIR"
  exit 0
fi
mkdir -p "$DIR"
python3 -m pip install -q --disable-pip-version-check --no-warn-conflicts --upgrade \
  --target "$DIR" "openai==$OPENAI_VERSION"
echo "python openai==$OPENAI_VERSION: installed in $DIR"

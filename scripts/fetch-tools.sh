#!/usr/bin/env bash
# Installs the chain tools the tests use, from the npm registry, into a cache folder (default:
# .cache/tools in the repository; override with RAKIS_TOOLS_DIR). Idempotent.
#   anvil  (npm @foundry-rs/anvil, a local EVM node) -> $DIR/node_modules/.bin/anvil
#   solcjs (npm solc, the Solidity compiler)           -> $DIR/node_modules/solc
# Versions are pinned: the committed contract artifacts are compiled with exactly this solc.
# Prints one line per tool: its version, its size and where it is.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${RAKIS_TOOLS_DIR:-$ROOT/.cache/tools}"
ANVIL_VERSION=1.7.1
SOLC_VERSION=0.8.37
ANVIL="$DIR/node_modules/.bin/anvil"
SOLC="$DIR/node_modules/solc"

have_anvil() { [ -x "$ANVIL" ] && "$ANVIL" --version 2>/dev/null | grep -q "$ANVIL_VERSION"; }
have_solc() { [ -f "$SOLC/package.json" ] && grep -q "\"version\": \"$SOLC_VERSION\"" "$SOLC/package.json"; }

how="present"
if ! have_anvil || ! have_solc; then
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install anvil and solc (install Node.js 18+)" >&2; exit 1; }
  mkdir -p "$DIR"
  [ -f "$DIR/package.json" ] || echo '{"name":"rakis-tools","private":true}' > "$DIR/package.json"
  log="$(mktemp)"
  npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error \
    "@foundry-rs/anvil@$ANVIL_VERSION" "solc@$SOLC_VERSION" >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; echo "could not install anvil and solc from npm" >&2; exit 1; }
  rm -f "$log"
  how="fetched from npm"
fi
# The anvil package is a launcher; the binary comes in a platform package beside it.
echo "tool anvil $ANVIL_VERSION (local EVM node): $how, $(du -sh "$DIR/node_modules/@foundry-rs" | cut -f1) in $ANVIL"
echo "tool solc $SOLC_VERSION (solcjs, Solidity compiler): $how, $(du -sh "$SOLC" | cut -f1) in $SOLC"

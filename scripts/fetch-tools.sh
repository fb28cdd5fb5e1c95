#!/usr/bin/env bash
# Installs the chain tools the tests use, from the npm registry, into a cache folder (default:
# .cache/tools in the repository; override with RAKIS_TOOLS_DIR). Idempotent.
#   anvil  (npm @foundry-rs/anvil, a local EVM node) -> $DIR/node_modules/.bin/anvil
#   solcjs (npm solc, the Solidity compiler)           -> $DIR/node_modules/solc
# Versions are pinned: the committed contract artifacts are compiled with exactly this solc.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${RAKIS_TOOLS_DIR:-$ROOT/.cache/tools}"
ANVIL_VERSION=1.7.1
SOLC_VERSION=0.8.37

if [ -x "$DIR/node_modules/.bin/anvil" ] && [ -f "$DIR/node_modules/solc/package.json" ] \
   && grep -q "\"version\": \"$SOLC_VERSION\"" "$DIR/node_modules/solc/package.json"; then
  echo "chain tools present in $DIR"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm is needed to install anvil and solc (install Node.js 18+)" >&2; exit 1; }
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name":"rakis-tools","private":true}' > "$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --silent \
  "@foundry-rs/anvil@$ANVIL_VERSION" "solc@$SOLC_VERSION"
"$DIR/node_modules/.bin/anvil" --version | head -1
echo "chain tools installed in $DIR"

#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short time on top of the committed corpus and fails
# on a crash (a panic, an invariant broken, a timeout or an out-of-memory).
#
#   RAKIS_FUZZ_SECONDS  seconds per target (default 30)
#   RAKIS_FUZZ_TARGETS  targets to run (default: every target cargo fuzz lists)
#   RAKIS_FUZZ_SANITIZER  cargo-fuzz sanitizer (default none: works on a stable toolchain;
#                         "address" needs a nightly toolchain, e.g. `cargo +nightly`)
#
# New inputs found go to a temporary folder: the committed corpus is read,
# never written (minimize it with `cargo fuzz cmin`, see docs/security.md). A crashing input is
# kept in fuzz/artifacts/<target>/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SECS="${RAKIS_FUZZ_SECONDS:-30}"
SANITIZER="${RAKIS_FUZZ_SANITIZER:-none}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Stable toolchains build these targets as they are (no sanitizer); set RUSTC_BOOTSTRAP=1
# yourself if a cargo-fuzz version asks for unstable flags.
TARGETS="${RAKIS_FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "== building fuzz targets (sanitizer: $SANITIZER)"
cargo fuzz build --sanitizer "$SANITIZER"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for t in $TARGETS; do
  echo "== fuzzing $t for ${SECS}s"
  mkdir -p "$tmp/$t" "fuzz/corpus/$t"
  cargo fuzz run --sanitizer "$SANITIZER" "$t" "$tmp/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$tmp/$t.log" || { tail -n 60 "$tmp/$t.log"; echo "fuzz target $t failed"; exit 1; }
  grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|Done)" "$tmp/$t.log" || true
done
echo "== fuzzing passed"

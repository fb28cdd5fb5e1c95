#!/usr/bin/env bash
# llama.cpp's own llama-bench (built from the llama.cpp tree vendored in the llama-cpp-python
# 0.3.36 sdist, see README.md; LLAMA_BENCH names the binary) on SmolLM2-135M-Instruct Q4_1, 2 threads, 5 repetitions.
# pp32 = one 32-token prompt batch; tg128 = 128 single-token decodes from an empty context;
# pg32,128 = 32-token prompt then 128 generated tokens, timed together.
set -euo pipefail
cd "$(dirname "$0")"
BENCH=${LLAMA_BENCH:-/tmp/llbuild/bin/llama-bench}
MODEL=${MODEL:-../../.cache/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
TAG=${1:-run}
mkdir -p logs
OUT="logs/$TAG-llama_bench_results.json"
timeout 600 "$BENCH" -m "$MODEL" -t 2 -p 32 -n 128 -pg 32,128 -r 5 -o json > "$OUT"
OUT="$OUT" python3 - <<'EOF'
import json, os, statistics
rows = json.load(open(os.environ["OUT"]))
for r in rows:
    name = f"pp{r['n_prompt']}" if r['n_gen'] == 0 else (f"tg{r['n_gen']}" if r['n_prompt'] == 0 else f"pp{r['n_prompt']}+tg{r['n_gen']}")
    ts = r["samples_ts"]
    print(f"{name:12s} tokens/s median={statistics.median(ts):.2f} min={min(ts):.2f} max={max(ts):.2f} "
          f"(llama-bench avg={r['avg_ts']:.2f} sd={r['stddev_ts']:.2f}) threads={r['n_threads']} build={r['build_commit']}")
EOF

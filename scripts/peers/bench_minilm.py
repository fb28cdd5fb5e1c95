#!/usr/bin/env python3
"""Embedding throughput of all-MiniLM-L6-v2 on CPU with PyTorch + sentence-transformers.

Run with the venv python:  /tmp/venv-bench/bin/python bench_minilm.py [--model DIR] [--runs 5]
Writes minilm_results.json next to this script (ignored by git). The workload is
scripts/fixtures/make_sentences.py's; the reference check is scripts/fixtures/make_minilm_reference.py's.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
from make_sentences import make_sentences  # noqa: E402

# ~40 words, used for the single-sentence latency figure
SINGLE = ("Peer to peer inference networks need a cheap and deterministic way to compare the "
          "outputs of many nodes, so every node embeds the generated text, quantises the vector "
          "to bits and shares a hash before revealing the result to the others.")


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": list(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-tag", default="", help="if set, results go to logs/<tag>-minilm_results.json")
    args = ap.parse_args()

    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import sentence_transformers
    import transformers
    import tokenizers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    sentences = make_sentences()
    tok = model.tokenizer
    ntoks = [len(tok(s)["input_ids"]) for s in sentences]

    res = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_config": torch.__config__.show(),
        "model_dir": args.model,
        "max_seq_length": model.max_seq_length,
        "workload": {
            "n_sentences": len(sentences),
            "words_min_max": [min(len(s.split()) for s in sentences), max(len(s.split()) for s in sentences)],
            "tokens_incl_special_min_median_max": [min(ntoks), statistics.median(ntoks), max(ntoks)],
            "tokens_total": sum(ntoks),
        },
        "runs": args.runs,
    }

    def timed(fn):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    with torch.inference_mode():
        # warm-up
        model.encode(sentences[:64], batch_size=32, normalize_embeddings=True)
        model.encode(sentences[:8], batch_size=1, normalize_embeddings=True)

        for bs in (32, 1):
            walls, cpus = [], []
            for _ in range(args.runs):
                w, c = timed(lambda: model.encode(sentences, batch_size=bs, normalize_embeddings=True,
                                                  convert_to_numpy=True))
                walls.append(w)
                cpus.append(c)
            sps = [len(sentences) / w for w in walls]
            res[f"batch_{bs}"] = {
                "wall_s": stats(walls),
                "cpu_s": stats(cpus),
                "sentences_per_s": stats(sps),
                "ms_per_sentence": stats([1000 * w / len(sentences) for w in walls]),
                "tokens_per_s_median": sum(ntoks) / statistics.median(walls),
                "cpu_over_wall_median": statistics.median([c / w for c, w in zip(cpus, walls)]),
            }
            print(f"batch {bs}: sentences/s median={statistics.median(sps):.1f} "
                  f"min={min(sps):.1f} max={max(sps):.1f}", flush=True)

        # single-sentence latency (one encode() call for one ~40-word sentence), 5 runs x 20 calls
        n_single_tok = len(tok(SINGLE)["input_ids"])
        lat = []
        for _ in range(args.runs):
            w, _c = timed(lambda: [model.encode([SINGLE], batch_size=1, normalize_embeddings=True)
                                   for _ in range(20)])
            lat.append(1000 * w / 20)
        res["single_sentence_latency_ms"] = stats(lat)
        res["single_sentence"] = {"text": SINGLE, "tokens_incl_special": n_single_tok}
        print(f"single sentence ({n_single_tok} tokens): ms median={statistics.median(lat):.2f}", flush=True)

    # the reference fixture's own spread (alone vs batched, sentence-transformers vs transformers)
    from make_minilm_reference import reference  # noqa: E402
    ref = reference(model, args.model)
    res["reference_checks"] = {k: ref[k] for k in ref if k.startswith("max_abs_diff")}
    out = (os.path.join(HERE, "logs", f"{args.out_tag}-minilm_results.json") if args.out_tag
           else os.path.join(HERE, "minilm_results.json"))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "torch_config"}, indent=1))


if __name__ == "__main__":
    main()

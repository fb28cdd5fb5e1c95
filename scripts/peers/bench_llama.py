#!/usr/bin/env python3
"""SmolLM2-135M-Instruct Q4_1 GGUF on CPU via llama-cpp-python (llama.cpp built from source by pip).

Run: /tmp/venv-llama/bin/python bench_llama.py [--model PATH] [--runs 5] [--threads 2]
Writes llama_results.json next to this script.

Workload per run: fresh KV cache, one llama_decode of a 32-token prompt (prompt processing),
then 128 greedy single-token decodes (generation; EOS is ignored so every run decodes 128 tokens).
Figures are taken both from Python wall clock and from llama.cpp's own llama_perf_context counters.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))

PROMPT_TEXT = (
    "In a small village at the edge of a quiet forest, the people gathered every evening to share "
    "stories about the river, the mountains, the weather and the long history of their families, "
    "and the children listened carefully."
)
CHAT_QUESTION = "What is the capital of France? Answer in one sentence."
N_PROMPT = 32
N_GEN = 128


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "values": list(xs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), ".cache/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-tag", default="", help="if set, results go to logs/<tag>-llama_results.json")
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, seed=0, verbose=False)
    ctx = llm._ctx.ctx

    prompt = llm.tokenize(PROMPT_TEXT.encode(), add_bos=False, special=False)
    assert len(prompt) >= N_PROMPT, len(prompt)
    prompt = prompt[:N_PROMPT]

    def one_run():
        llm.reset()
        llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        out = []
        for _ in range(N_GEN):
            tok = llm.sample(top_k=1, temp=0.0)
            out.append(tok)
            llm.eval([tok])
        t2 = time.perf_counter()
        p = llama_cpp.llama_perf_context(ctx)
        return {
            "pp_wall_s": t1 - t0, "gen_wall_s": t2 - t1,
            "perf_t_p_eval_ms": p.t_p_eval_ms, "perf_n_p_eval": p.n_p_eval,
            "perf_t_eval_ms": p.t_eval_ms, "perf_n_eval": p.n_eval,
            "tokens": out,
        }

    one_run()  # warm-up
    runs = [one_run() for _ in range(args.runs)]
    pp_wall = [N_PROMPT / r["pp_wall_s"] for r in runs]
    tg_wall = [N_GEN / r["gen_wall_s"] for r in runs]
    pp_perf = [1000.0 * r["perf_n_p_eval"] / r["perf_t_p_eval_ms"] for r in runs]
    tg_perf = [1000.0 * r["perf_n_eval"] / r["perf_t_eval_ms"] for r in runs]
    same_tokens = all(r["tokens"] == runs[0]["tokens"] for r in runs)

    # Chat prompt, greedy, model's own chat template (GGUF metadata tokenizer.chat_template)
    chat = llm.create_chat_completion(
        messages=[{"role": "user", "content": CHAT_QUESTION}], temperature=0.0, top_k=1, max_tokens=128, seed=0)
    chat_text = chat["choices"][0]["message"]["content"]

    # Same thing by hand: render the template with jinja2, tokenize with special tokens, argmax loop
    import jinja2
    tmpl = llm.metadata.get("tokenizer.chat_template")
    rendered = jinja2.Environment().from_string(tmpl).render(
        messages=[{"role": "user", "content": CHAT_QUESTION}], add_generation_prompt=True,
        bos_token="", eos_token="")
    chat_prompt_ids = llm.tokenize(rendered.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(chat_prompt_ids)
    gen_ids = []
    eos = llm.token_eos()
    im_end = llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    stop_ids = {eos, *im_end}
    for _ in range(128):
        t = llm.sample(top_k=1, temp=0.0)
        if t in stop_ids:
            break
        gen_ids.append(t)
        llm.eval([t])
    manual_text = llm.detokenize(gen_ids).decode("utf-8", errors="replace")

    res = {
        "versions": {"python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__},
        "system_info": llama_cpp.llama_print_system_info().decode(),
        "model": args.model,
        "model_size_bytes": os.path.getsize(args.model),
        "threads": args.threads, "n_ctx": 512, "n_batch": 512,
        "n_prompt": N_PROMPT, "n_gen": N_GEN, "runs": args.runs,
        "prompt_token_ids": prompt,
        "pp_tokens_per_s_wall": stats(pp_wall),
        "tg_tokens_per_s_wall": stats(tg_wall),
        "pp_tokens_per_s_llama_perf": stats(pp_perf),
        "tg_tokens_per_s_llama_perf": stats(tg_perf),
        "tg_ms_per_token_wall_median": 1000.0 / statistics.median(tg_wall),
        "perf_counts_last_run": {k: runs[-1][k] for k in ("perf_n_p_eval", "perf_n_eval")},
        "generated_tokens_identical_across_runs": same_tokens,
        "bench_generation_text": llm.detokenize(runs[0]["tokens"]).decode("utf-8", errors="replace"),
        "chat": {
            "question": CHAT_QUESTION,
            "rendered_prompt": rendered,
            "prompt_token_ids": chat_prompt_ids,
            "create_chat_completion_text": chat_text,
            "create_chat_completion_usage": chat.get("usage"),
            "manual_greedy_token_ids": gen_ids,
            "manual_greedy_text": manual_text,
            "texts_agree": chat_text.strip() == manual_text.strip(),
        },
    }
    out = (os.path.join(HERE, "logs", f"{args.out_tag}-llama_results.json") if args.out_tag
           else os.path.join(HERE, "llama_results.json"))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    for k in ("pp_tokens_per_s_wall", "tg_tokens_per_s_wall", "pp_tokens_per_s_llama_perf",
              "tg_tokens_per_s_llama_perf"):
        print(k, {a: round(b, 2) for a, b in res[k].items() if a != "values"})
    print("chat:", repr(chat_text))
    print("manual:", repr(manual_text))


if __name__ == "__main__":
    main()

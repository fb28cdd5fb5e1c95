#!/usr/bin/env python3
"""Talks to a Rakis gateway with the official `openai` Python package, as an application would.

    PYTHONPATH=.cache/python python3 scripts/openai_client_check.py \
        --base-url http://127.0.0.1:8080/v1 --model smollm2 --embedding-model all-MiniLM-L6-v2

Asks once plainly and once streaming (with a token limit it reaches), embeds two texts, and makes three bad requests. Prints one
JSON object on stdout: the answers with their `rakis` verification objects (which the caller
checks against the committee), the embeddings' shape, and the errors as the client raised them.
Exits non-zero when the client itself fails (a wire-format incompatibility).
"""
import argparse
import json
import sys

import openai


def error_of(call):
    try:
        call()
    except openai.APIStatusError as e:  # the client's typed errors
        body = e.body if isinstance(e.body, dict) else {}
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "code": body.get("code"),
            "param": body.get("param"),
            "type": body.get("type"),
            "message": body.get("message"),
        }
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--embedding-model", required=True)
    p.add_argument("--api-key", default="not-needed-on-loopback")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--stream-max-tokens", type=int, default=4)
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, timeout=300, max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]

    plain = client.chat.completions.create(
        model=a.model, messages=messages, max_tokens=a.max_tokens, temperature=0
    )
    out = {
        "plain": {
            "id": plain.id,
            "object": plain.object,
            "content": plain.choices[0].message.content,
            "role": plain.choices[0].message.role,
            "finish_reason": plain.choices[0].finish_reason,
            # Fields outside the OpenAI schema are kept by the client as extras.
            "rakis": plain.model_extra.get("rakis"),
        }
    }

    pieces, last, chunks = [], None, 0
    for chunk in client.chat.completions.create(
        model=a.model, messages=messages, max_tokens=a.stream_max_tokens, temperature=0, stream=True
    ):
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    out["stream"] = {
        "chunks": chunks,
        "content": "".join(pieces),
        "finish_reason": last.choices[0].finish_reason if last else None,
        "rakis": last.model_extra.get("rakis") if last else None,
    }

    emb = client.embeddings.create(model=a.embedding_model, input=["Paris", "Lyon"])
    out["embeddings"] = {
        "count": len(emb.data),
        "dims": [len(d.embedding) for d in emb.data],
        "first": emb.data[0].embedding[:4],
    }
    models = client.models.list()
    out["models"] = [m.id for m in models.data]

    out["errors"] = {
        "unknown_model": error_of(
            lambda: client.chat.completions.create(model="gpt-nope", messages=messages)
        ),
        "n_2": error_of(
            lambda: client.chat.completions.create(model=a.model, messages=messages, n=2)
        ),
        "temperature_5": error_of(
            lambda: client.chat.completions.create(
                model=a.model, messages=messages, temperature=5
            )
        ),
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()

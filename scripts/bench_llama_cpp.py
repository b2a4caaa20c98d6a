#!/usr/bin/env python3
"""Benchmark llama.cpp (through llama-cpp-python) on a GGUF model, as a baseline for Minerva.

Measures, on a fresh context per run (n_ctx 1024, n_batch 512):
  - prefill: wall time of one `eval` of a PROMPT_TOKENS-token prompt (tokens of a fixed English
    text, repeated as needed) -> prefill_tok_s;
  - decode: after a short prompt, GEN_TOKENS greedy tokens evaluated one at a time (argmax of
    the last logits, EOS ignored); wall time of those evals + argmax -> decode_tok_s.
One warm-up run is discarded; the median over --runs runs is reported. Prints one JSON line:
  {"engine":"llama.cpp","version":..,"threads":N,"prefill_tok_s":..,"decode_tok_s":..}

Usage (with the reference venv):
    "$(scripts/setup-reference-env)" scripts/bench_llama_cpp.py "$(scripts/fetch-default-model)" \
        --threads 2 --prompt-tokens 512 --gen-tokens 128 --runs 3
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np

TEXT = (
    "The history of computing is a story of ideas that became machines. Early mechanical "
    "calculators could add and subtract, but they could not be programmed. In the nineteenth "
    "century, Charles Babbage designed the Analytical Engine, a general purpose machine that "
    "would have read its instructions from punched cards, and Ada Lovelace wrote what many "
    "consider the first program for it. A century later, electronic computers filled whole rooms, "
    "consumed enormous amounts of power, and were programmed by rewiring panels or flipping "
    "switches. The invention of the transistor, and then of the integrated circuit, made "
    "computers smaller, cheaper and far more reliable. Personal computers arrived in homes and "
    "offices, networks connected them, and the web turned them into windows onto a shared "
    "library of human knowledge. Today, language models running on ordinary processors can "
    "answer questions, summarize documents and write code, and the engineering challenge has "
    "moved to making them fast and efficient on the hardware that people already own. "
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n-ctx", type=int, default=1024)
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=512, n_ubatch=512,
                n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    if args.prompt_tokens + 1 > args.n_ctx or 8 + args.gen_tokens > args.n_ctx:
        sys.exit("bench_llama_cpp: n_ctx too small for the requested token counts")
    n_vocab = llm.n_vocab()
    base = llm.tokenize(TEXT.encode("utf-8"), add_bos=False, special=False)
    prompt = (base * (args.prompt_tokens // len(base) + 1))[: args.prompt_tokens]
    short = base[:8]

    def last_argmax() -> int:
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def fresh() -> None:
        llm.reset()
        mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
        llama_cpp.llama_memory_clear(mem, True)

    def one_run():
        fresh()
        t0 = time.perf_counter()
        llm.eval(prompt)
        last_argmax()
        t_prefill = time.perf_counter() - t0

        fresh()
        llm.eval(short)
        tok = last_argmax()
        t0 = time.perf_counter()
        for _ in range(args.gen_tokens):
            llm.eval([tok])
            tok = last_argmax()
        t_decode = time.perf_counter() - t0
        return args.prompt_tokens / t_prefill, args.gen_tokens / t_decode

    one_run()  # warm-up
    results = [one_run() for _ in range(args.runs)]
    print(json.dumps({
        "engine": "llama.cpp",
        "version": f"llama-cpp-python {llama_cpp.__version__}",
        "threads": args.threads,
        "prefill_tok_s": round(statistics.median(r[0] for r in results), 2),
        "decode_tok_s": round(statistics.median(r[1] for r in results), 2),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()

"""Prefix-shared ("cascade") attention on and off, side by side in one process.

    python -m benchmarks.prefix_sharing [--model smollm2-135m] [--tokens 64] [--json]

Two workloads of 4 prompts x 16 samples, EOS ignored so both arms decode the same number of
tokens: `short` (GSM8K questions, ~150 prompt tokens) and `long` (each question after twelve
other worked questions, ~1,000 prompt tokens, as in few-shot prompting). Prints tokens/s for both
arms and their ratio; the figures are in docs/performance.md.
"""
from __future__ import annotations

import argparse
import time

import orjson

from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies import models
from strategies.benchmark import chat_ids, gsm8k_prompts

SHOTS = 12


def prompts(kind: str) -> list[str]:
    qs = gsm8k_prompts(4 + SHOTS)
    if kind == "short":
        return qs[:4]
    shots = "\n\n".join(f"Example {j + 1}: {q}" for j, q in enumerate(qs[4:]))
    return [f"{shots}\n\nNow solve: {q}" for q in qs[:4]]


def tokens_per_second(loaded, texts: list[str], tokens: int, share: bool) -> tuple[float, int]:
    eng = Engine(loaded.model, loaded.tokenizer, Discrete(DiscreteParams(temperature=0.7)), batch_size=64,
                 max_new_tokens=tokens, ignore_eos=True, share_prefix=share)
    reqs = [Request(key=i, prompt_ids=chat_ids(loaded.tokenizer, t), n=16) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    for _ in eng.run(reqs):
        pass
    return eng.tokens_generated / (time.perf_counter() - t0), len(reqs[0].prompt_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    loaded = models.load(args.model)
    tokens_per_second(loaded, prompts("short")[:1], 4, True)  # warm-up
    out = []
    for kind in ("short", "long"):
        texts = prompts(kind)
        off, n_prompt = tokens_per_second(loaded, texts, args.tokens, False)
        on, _ = tokens_per_second(loaded, texts, args.tokens, True)
        out.append({"workload": kind, "prompt_tokens": n_prompt, "per_row_tok_s": round(off, 2),
                    "shared_tok_s": round(on, 2), "ratio": round(on / off, 3)})
    if args.json:
        for row in out:
            print(orjson.dumps(row).decode())
        return
    print(f"{'workload':<10}{'prompt tokens':>14}{'per-row tok/s':>15}{'shared tok/s':>14}{'ratio':>8}")
    for r in out:
        print(f"{r['workload']:<10}{r['prompt_tokens']:>14}{r['per_row_tok_s']:>15}{r['shared_tok_s']:>14}"
              f"{r['ratio']:>8}")


if __name__ == "__main__":
    main()

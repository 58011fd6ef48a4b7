"""The table `make demo` prints: greedy vs sampling and voting, from two aggregated runs.

    python -m benchmarks.demo_table greedy.jsonl sampled.jsonl
"""
from __future__ import annotations

import sys

import orjson

from strategies.evaluation import load_problems, summarize


def read(path: str) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def main(greedy_path: str, sampled_path: str) -> None:
    greedy, _ = load_problems(read(greedy_path))
    sampled, _ = load_problems(read(sampled_path))
    g, s = summarize(greedy), summarize(sampled)
    n = s["samples"]
    rows = [("greedy decoding (1 sample)", g["methods"]["majority"]["accuracy"], g["tokens"] * g["problems"]),
            (f"mean single sample (of {n})", s["single_sample_accuracy"], None)]
    for label, m in s["methods"].items():
        rows.append((f"{label} over {n} samples", m["accuracy"], None))
    rows.append((f"oracle (any of {n} correct)", s["oracle"], s["tokens"] * s["problems"]))
    print(f"{s['problems']} problems, embedded model")
    print(f"{'':<34}{'accuracy':>9}  {'tokens generated':>16}")
    for label, acc, tok in rows:
        print(f"{label:<34}{acc:>9.3f}  {'' if tok is None else f'{tok:>16,.0f}'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""The table `make demo` prints: greedy vs sampling and voting, from two aggregated runs.

    python -m benchmarks.demo_table greedy.jsonl sampled.jsonl

The README's table is this module's output on the records in tests/fixtures/demo/ (the raw
`tts generate` outputs of a demo run, aggregated as benchmarks/demo.sh does); tests/test_docs.py
checks that the two agree. After a change that moves the numbers, rerun `make demo`, copy
`out/demo/{greedy,sampled}.gen.jsonl` there and paste the printed table into the README.
"""
from __future__ import annotations

import sys

import orjson

from strategies.evaluation import load_problems, summarize


def read(path: str) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def table(greedy_records: list[dict], sampled_records: list[dict]) -> str:
    greedy, _ = load_problems(greedy_records)
    sampled, _ = load_problems(sampled_records)
    g, s = summarize(greedy), summarize(sampled)
    n = s["samples"]
    rows = [("greedy decoding (1 sample)", g["methods"]["majority"]["accuracy"], g["tokens"] * g["problems"]),
            (f"mean single sample (of {n})", s["single_sample_accuracy"], None)]
    for label, m in s["methods"].items():
        rows.append((f"{label} over {n} samples", m["accuracy"], None))
    rows.append((f"oracle (any of {n} correct)", s["oracle"], s["tokens"] * s["problems"]))
    lines = [f"{s['problems']} problems, embedded model",
             f"{'':<34}{'accuracy':>9}  {'tokens generated':>16}"]
    for label, acc, tok in rows:
        lines.append(f"{label:<34}{acc:>9.3f}  {'' if tok is None else f'{tok:>16,.0f}'}")
    return "\n".join(lines)


def main(greedy_path: str, sampled_path: str) -> None:
    print(table(read(greedy_path), read(sampled_path)))


if __name__ == "__main__":
    main(*sys.argv[1:3])

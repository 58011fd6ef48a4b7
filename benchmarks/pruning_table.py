"""The tables of docs/experiments.md's pruning section: per pruned run (a `tts prune` replay or a
`tts generate --prune` run), mean tokens per problem, majority accuracy, and the judge's seconds
per prompt, next to the unpruned run.

    python -m benchmarks.pruning_table full.jsonl label=run.jsonl ...
"""
from __future__ import annotations

import sys

import orjson

from strategies.aggregators.api import parse_methods
from strategies.evaluation.core import load_problems, summarize


def read(path):
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def row(label, records):
    problems, _ = load_problems(records)
    s = summarize(problems, parse_methods(["majority"]))
    judge = [r.get("prune", {}).get("judge_s") for r in records]
    judge = [j for j in judge if j is not None]
    stopped = sum(x.get("finish") in ("pruned", "low-confidence", "consensus") for r in records for x in r["samples"])
    skipped = sum(r.get("skipped", 0) for r in records)
    return (label, s["problems"], s["tokens"], s["methods"]["majority"]["accuracy"], stopped, skipped,
            (sum(judge) / len(judge)) if judge else None)


def main(argv):
    full = read(argv[0])
    rows = [row("unpruned (majority of all)", full)]
    for spec in argv[1:]:
        label, _, path = spec.partition("=")
        rows.append(row(label, read(path)))
    base = rows[0][2]
    print("| run | problems | tokens / problem | saved | majority accuracy | stopped | skipped | judge s / prompt |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, tok, acc, stopped, skipped, judge in rows:
        j = "" if judge is None else f"{judge:.3f}"
        print(f"| {label} | {n} | {tok:.0f} | {100 * (1 - tok / base):.0f}% | {acc:.3f} | {stopped} | {skipped} | {j} |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The tables of docs/experiments.md's pruning section: per pruned run (a `tts prune` replay or a
`tts generate --prune` run), mean tokens per problem, majority accuracy, and the judge's seconds
per prompt, next to the unpruned run.

    python -m benchmarks.pruning_table full.jsonl label=run.jsonl ...

The judge's seconds come from the run's closing line on stderr ("judge S s over P prompts"),
read from RUN.log or RUN.time beside RUN.jsonl (benchmarks/pruning.sh writes them); the records
leave the time out, so that a command's output is the same bytes every run.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson

from strategies.aggregators.api import parse_methods
from strategies.evaluation.core import load_problems, summarize


def read(path):
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


JUDGE_TIME = re.compile(r"judge ([0-9.]+) s over ([0-9]+) prompts")


def judge_seconds_per_prompt(path) -> float | None:
    """From the stderr log beside a run, if there is one that names the judge's time."""
    for log in (Path(path).with_suffix(".log"), Path(path).with_suffix(".time")):
        found = JUDGE_TIME.search(log.read_text()) if log.exists() else None
        if found:
            return float(found[1]) / int(found[2])
    return None


def row(label, records, judge=None):
    problems, _ = load_problems(records)
    s = summarize(problems, parse_methods(["majority"]))
    stopped = sum(x.get("finish") in ("pruned", "low-confidence", "consensus") for r in records for x in r["samples"])
    skipped = sum(r.get("skipped", 0) for r in records)
    return (label, s["problems"], s["tokens"], s["methods"]["majority"]["accuracy"], stopped, skipped, judge)


def main(argv):
    full = read(argv[0])
    rows = [row("unpruned (majority of all)", full)]
    for spec in argv[1:]:
        label, _, path = spec.partition("=")
        rows.append(row(label, read(path), judge_seconds_per_prompt(path)))
    base = rows[0][2]
    print("| run | problems | tokens / problem | saved | majority accuracy | stopped | skipped | judge s / prompt |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, tok, acc, stopped, skipped, judge in rows:
        j = "" if judge is None else f"{judge:.3f}"
        print(f"| {label} | {n} | {tok:.0f} | {100 * (1 - tok / base):.0f}% | {acc:.3f} | {stopped} | {skipped} | {j} |")


if __name__ == "__main__":
    main(sys.argv[1:])

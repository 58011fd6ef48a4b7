"""Summarise the discrete-vs-soft experiment of docs/experiments.md.

    python -m benchmarks.soft_experiment NAME=FILE[:N] ...   (N: use only samples i < N)
"""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from benchmarks.demo_table import read
from strategies.aggregators.api import parse_methods
from strategies.evaluation import load_problems, summarize


def arm(path: str, keep: int | None, limit: int | None) -> dict:
    records = read(path)[:limit]
    if keep:
        for r in records:
            r["samples"] = [s for s in r["samples"] if s["i"] < keep]
    problems, _ = load_problems(records)
    summary = summarize(problems, parse_methods(["majority"]))
    distinct = [len(set(p.pool.groups.ids[p.pool.groups.ids >= 0].tolist())) for p in problems]
    texts = [len({s["text"] for s in r["samples"]}) for r in records]
    n_samples = sum(len(r["samples"]) for r in records)
    ended = Counter(s.get("soft", {}).get("ended_by", "-") for r in records for s in r["samples"])
    no_answer = float(np.mean([np.mean(p.pool.groups.ids < 0) for p in problems]))
    return {"problems": summary["problems"], "single": summary["single_sample_accuracy"],
            "majority": summary["methods"]["majority"]["accuracy"], "oracle": summary["oracle"],
            "tokens_per_sample": sum(s["n_tokens"] for r in records for s in r["samples"]) / n_samples,
            "distinct_answers": float(np.mean(distinct)), "distinct_texts": float(np.mean(texts)),
            "no_answer": no_answer, "ended_by": dict(ended)}


def main(args: list[str]) -> None:
    limit = 50
    print("| arm | problems | mean single-sample acc. | majority acc. | oracle | tokens / sample | "
          "distinct answers / problem | distinct texts / problem | no answer | soft ended_by |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args:
        name, _, rest = spec.partition("=")
        path, _, keep = rest.partition(":")
        a = arm(path, int(keep) if keep else None, limit)
        ended = ", ".join(f"{k} {v}" for k, v in sorted(a["ended_by"].items()) if k != "-") or "—"
        print(f"| {name} | {a['problems']} | {a['single']:.3f} | {a['majority']:.3f} | {a['oracle']:.3f} | "
              f"{a['tokens_per_sample']:.1f} | {a['distinct_answers']:.2f} | {a['distinct_texts']:.2f} | "
              f"{a['no_answer']:.1%} | {ended} |")


if __name__ == "__main__":
    main(sys.argv[1:])

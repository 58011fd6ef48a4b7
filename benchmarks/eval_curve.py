"""Time `tts eval --curve` re-aggregation on a GSM8K-sized synthetic pool.

    python benchmarks/eval_curve.py [--problems 1319] [--samples 64] [--repeats 10] [--jobs 2]

Builds the pool in memory (no model), with answers and signals shaped like a real run: per-problem
difficulty from a U-shaped Beta (many problems nearly always right or nearly always wrong, as on
GSM8K), wrong answers drawn from a few per-problem distractors, 8% of samples without an answer,
correct paths slightly more probable and more self-certain than wrong ones, and 5% duplicated
texts. Then it re-aggregates every method for K = 1, 2, 4, ..., N with `repeats` random subsets
each, exactly as `tts eval --curve` does after loading, and prints the time per stage and per K.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import strategies.aggregators.rpc as rpc  # noqa: E402
from strategies.aggregators import REGISTRY  # noqa: E402
from strategies.aggregators.api import parse_methods  # noqa: E402
from strategies.evaluation import curve, load_problems  # noqa: E402

FITS = [0]


def _counting(prune, counter=FITS):
    def wrapped(X, jobs):
        counter[0] += X.shape[0]
        return prune(X, jobs)
    return wrapped


rpc._prune_parallel = _counting(rpc._prune_parallel)  # how many mixture fits a curve runs


def synthetic_records(problems: int, samples: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for p in range(problems):
        gold = int(rng.integers(2, 5000))
        skill = rng.beta(0.7, 0.45)
        distractors = [str(gold + int(d)) for d in rng.choice(np.r_[-50:0, 1:51], size=6, replace=False)]
        zipf = 1.0 / np.arange(1, 7)
        out = []
        for i in range(samples):
            if out and rng.random() < 0.05:  # a duplicated path: same text, answer and signals
                out.append({**out[int(rng.integers(len(out)))], "i": i})
                continue
            right = rng.random() < skill
            pred = str(gold) if right else (None if rng.random() < 0.08 else
                                            distractors[rng.choice(6, p=zipf / zipf.sum())])
            n_tok = int(rng.integers(80, 400))
            mean_lp = -rng.gamma(2.0, 0.10 if right else 0.16)
            out.append({"i": i, "text": f"path {p}-{i} ... {pred}", "pred": pred, "n_tokens": n_tok,
                        "mean_logprob": round(mean_lp, 4), "logprob": round(mean_lp * n_tok, 4),
                        "self_certainty": round(rng.normal(10.0 if right else 9.4, 1.2), 4),
                        "confidence": round(rng.normal(6.5 if right else 6.0, 0.8), 4)})
        records.append({"id": p, "answer": str(gold), "samples": out})
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=1319)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--methods", default=",".join(REGISTRY))
    args = ap.parse_args()

    t0 = time.perf_counter()
    records = synthetic_records(args.problems, args.samples)
    t1 = time.perf_counter()
    methods = parse_methods(args.methods.split(","))
    problems, _ = load_problems(records, [m for _, m in methods])
    t2 = time.perf_counter()
    print(f"pool: {args.problems} problems x {args.samples} samples (built in {t1 - t0:.1f} s); "
          f"answers grouped and signals loaded in {t2 - t1:.1f} s", file=sys.stderr)

    print(f"load average before: {os.getloadavg()[0]:.2f} (cores usable: {len(os.sched_getaffinity(0))})",
          file=sys.stderr)
    for label, method in methods:
        FITS[0] = 0
        wall, cpu = timed(lambda: curve(problems, [(label, method)], repeats=args.repeats, seed=0, jobs=args.jobs))
        fits = f"  ({FITS[0]} mixture fits, {cpu / FITS[0] * 1e3:.2f} ms cpu each)" if FITS[0] else ""
        print(f"{label:15s} wall {wall:6.2f} s  cpu {cpu:6.2f} s{fits}", file=sys.stderr)
    wall, cpu = timed(lambda: curve(problems, methods, repeats=args.repeats, seed=0, jobs=args.jobs))
    print(f"all methods in one curve() call (what tts eval --curve runs): wall {wall:.2f} s, cpu {cpu:.2f} s "
          f"(jobs={args.jobs}; cpu = this process + its workers)", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and finished worker processes) of fn()."""
    def cpu():
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    t, c = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - t, cpu() - c


if __name__ == "__main__":
    main()

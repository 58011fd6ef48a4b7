"""Problems with gold answers, the summary table, and accuracy-vs-K curves (RPC's protocol)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from strategies.aggregators.api import (
    Pool, aggregate_pools, build_pool, check_signals, parse_methods, prepare, stack,
)
from strategies.aggregators.base import TIE_TOL, Aggregator, Batch, PoolError, decide
from strategies.evaluation.bootstrap import draw_means, interval, paired
from strategies.evaluation.metrics import brier, ece, pass_at_k, tie_credit
from verifiers import equivalent, normalize_gold
from verifiers.extract import TURN_MARKERS


@dataclass
class Problem:
    pool: Pool
    gold: str
    correct: np.ndarray       # (C,) bool: answer class c is equivalent to gold
    aggregates: dict          # label -> entry, as `tts aggregate` wrote them

    @property
    def n_correct(self) -> int:
        return int(np.sum(self.correct[self.pool.groups.ids[self.pool.groups.ids >= 0]]))


def load_problems(records: Iterable[dict], methods: Iterable[Aggregator] = (),
                  extract: str = "auto", truncated: str | None = None, stop=TURN_MARKERS
                  ) -> tuple[list[Problem], dict]:
    """Problems from aggregated (or plain generate) records.

    Records without a gold `answer` or without `samples` are skipped and counted in the second
    value; a gold answer that is a list or an object (not one answer) is a PoolError. Samples
    without `pred` are extracted with `extract` (texts cut at `stop`). `truncated`: None takes the
    samples' recorded `pred` (the default rule for samples without one); a rule of TRUNCATED
    decides cut-off samples afresh (see build_pool). `methods` makes sure the per-sample signals
    those methods need are present (PoolError otherwise, with `.position` set).
    """
    methods = list(methods)
    problems, skipped = [], {"no_gold": 0, "no_samples": 0}
    for pos, rec in enumerate(records):
        if isinstance(rec.get("answer"), (list, dict)):
            kind = "a list" if isinstance(rec["answer"], list) else "an object"
            e = PoolError(f"gold `answer` is {kind}, not one answer; give each record a single gold answer")
            e.position = pos
            raise e
        gold = normalize_gold(rec.get("answer"))
        if not isinstance(rec.get("samples"), list):
            skipped["no_samples"] += 1
            continue
        if gold is None:
            skipped["no_gold"] += 1
            continue
        check_signals(rec, methods, pos)
        pool = build_pool(rec["samples"], methods, extract, pos, truncated, stop=stop)
        correct = np.array([equivalent(rep, gold) for rep in pool.groups.reps], dtype=bool)
        problems.append(Problem(pool, gold, correct, rec.get("aggregates") or {}))
    return problems, skipped


def default_ks(n: int) -> list[int]:
    """Powers of two up to n, and n itself."""
    ks = [1 << e for e in range(max(n, 1).bit_length()) if (1 << e) <= n]
    return ks + ([n] if n and ks[-1] != n else [])


# --- the summary table -----------------------------------------------------------------------

def _entry_credit(entry: dict, gold: str) -> tuple[float, float]:
    """(tie credit, confidence) of one recorded aggregate."""
    scores = entry.get("scores") or {}
    if not scores:
        return (float(equivalent(entry.get("answer"), gold)), float(entry.get("confidence") or 0.0))
    top = max(scores.values())
    winners = [a for a, s in scores.items() if s >= top - TIE_TOL]
    credit = sum(equivalent(a, gold) for a in winners) / len(winners)
    return credit, float(entry.get("confidence") or 0.0)


def _credits(problems: list[Problem], label: str) -> tuple[np.ndarray, np.ndarray]:
    """(tie credit, confidence) per problem of one recorded method."""
    pairs = np.array([_entry_credit(p.aggregates[label], p.gold) for p in problems]).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _method_row(credit: np.ndarray, conf: np.ndarray, tokens: float) -> dict:
    return {"accuracy": float(credit.mean()), "ece": ece(conf, credit), "brier": brier(conf, credit),
            "tokens": tokens}


BASELINE = "majority"


def _baseline_credit(problems: list[Problem], credits: dict[str, np.ndarray]) -> np.ndarray:
    """Majority voting's per-problem credit: the recorded one if evaluated, else computed."""
    if BASELINE in credits:
        return credits[BASELINE]
    fresh = aggregate_pools([p.pool for p in problems], parse_methods([BASELINE]))
    return np.array([_entry_credit(a[BASELINE], p.gold)[0] for p, a in zip(problems, fresh)])


def _significance(rows: dict, credits: dict[str, np.ndarray], base: np.ndarray, draws: int, seed: int) -> None:
    """Add to each method's row its 95% bootstrap interval over problems and, against majority
    voting on the same draws, the share of draws it wins."""
    labels = list(credits)
    means = draw_means(np.vstack([credits[lab] for lab in labels] + [base]), draws, seed)
    for lab, m, ci in zip(labels, means, interval(means[:-1])):
        rows[lab]["ci95"] = [float(ci[0]), float(ci[1])]
        if lab != BASELINE:
            rows[lab]["vs_majority"] = paired(m, means[-1])


def common_labels(problems: list[Problem]) -> list[str]:
    """Aggregate labels present in every problem, in the order of the first."""
    if not problems:
        return []
    labels = list(problems[0].aggregates)
    return [lab for lab in labels if all(lab in p.aggregates for p in problems)]


def summarize(problems: list[Problem], methods: list[tuple[str, Aggregator]] | None = None,
              ks: list[int] | None = None, jobs: int = 1, bootstrap: int = 10000, seed: int = 0) -> dict:
    """Per-method accuracy (ties earn 1/|ties|), ECE (10 bins), Brier and mean tokens per
    problem; mean single-sample accuracy, unbiased pass@k and the oracle (any sample correct).

    With `bootstrap` draws (0: none), each method also gets `ci95`, its 95% percentile interval
    over problems, and `vs_majority`, a paired comparison with majority voting on the same draws
    (seeded by `seed`).

    Methods: the recorded `aggregates` found in every problem, or, with `methods`, a fresh
    aggregation of the pools.
    """
    if methods:
        fresh = aggregate_pools([p.pool for p in problems], methods, jobs=jobs)
        problems = [replace(p, aggregates=a) for p, a in zip(problems, fresh)]
    labels = [lab for lab, _ in methods] if methods else common_labels(problems)
    n = np.array([p.pool.size for p in problems])
    c = np.array([p.n_correct for p in problems])
    tokens = float(np.mean([p.pool.n_tokens for p in problems])) if problems else float("nan")
    ks = ks or default_ks(int(n.max()) if n.size else 1)
    # Samples that hit the token limit: their "answers" may be fragments picked up by the
    # last-number fallback, so the share is reported next to the accuracies.
    finishes = [s.get("finish") for p in problems for s in p.pool.samples]
    known = sum(f is not None for f in finishes)
    cut = sum(f == "length" for f in finishes)
    credits, rows = {}, {}
    for lab in labels:
        credits[lab], conf = _credits(problems, lab)
        rows[lab] = _method_row(credits[lab], conf, tokens)
    out = {
        "problems": len(problems),
        "samples": int(n.max()) if n.size else 0,
        "methods": rows,
        "single_sample_accuracy": float(np.mean(np.divide(c, n, out=np.zeros(len(n)), where=n > 0))) if n.size else float("nan"),
        "pass_at_k": {int(k): float(np.mean(pass_at_k(n, c, k))) for k in ks} if n.size else {},
        "oracle": float(np.mean(c > 0)) if n.size else float("nan"),
        "tokens": tokens,
        "truncated": {"samples": cut, "of": known, "share": cut / known if known else float("nan")},
    }
    if bootstrap > 0 and problems and labels:
        _significance(rows, credits, _baseline_credit(problems, credits), bootstrap, seed)
        out["bootstrap"] = {"draws": bootstrap, "seed": seed, "level": 0.95, "baseline": BASELINE}
    return out


# --- curves ----------------------------------------------------------------------------------

def take(b: Batch, rows: np.ndarray, idx: np.ndarray) -> Batch:
    """The Batch of samples idx (R,K) of rows `rows` (R,) of b."""
    r = rows[:, None]
    return Batch(b.cls[r, idx], b.n_classes, {k: v[r, idx] for k, v in b.fields.items()},
                 b.text[r, idx], b.need_used, b.jobs)


def draw_subsets(sizes: np.ndarray, k: int, repeats: int, seed: int) -> np.ndarray:
    """(repeats, P, min(k, max size)) sorted sample indices: a uniform random k-subset of each
    problem's samples per repeat. A problem with fewer than k samples gets all of them (the
    padding positions beyond its size carry no sample). Seeded per (seed, k), so adding a K
    value leaves the other curves unchanged."""
    P, N = len(sizes), int(sizes.max())
    rng = np.random.default_rng([seed, k])
    keys = rng.random((repeats, P, N))
    keys[:, np.arange(N)[None, :] >= sizes[:, None]] = np.inf
    return np.sort(np.argsort(keys, axis=2, kind="stable")[:, :, :min(k, N)], axis=2)


def _class_table(problems: list[Problem], n_classes: int) -> np.ndarray:
    table = np.zeros((len(problems), n_classes), dtype=bool)
    for j, p in enumerate(problems):
        table[j, :p.correct.size] = p.correct
    return table


def curve(problems: list[Problem], methods: list[tuple[str, Aggregator]], ks: list[int] | None = None,
          repeats: int = 10, seed: int = 0, jobs: int = 1, bootstrap: int = 10000) -> dict:
    """Accuracy vs K: for each K, `repeats` seeded random K-subsets of every problem's samples are
    re-aggregated by every method; mean ± std (over repeats) of accuracy and mean ECE per method.
    Per K also: pass@K (unbiased estimator), `oracle_mean` (any sample of the same subsets
    correct: the ceiling the methods are drawn against) and the mean tokens of the subsets.

    The std is the spread over subset draws on these problems. With `bootstrap` draws, each point
    also gets a 95% interval over problems: a bootstrap of the per-problem credit (averaged over
    the repeats), which is the uncertainty a benchmark of this size carries.

    Identical subsets (K at or above a problem's size, or chance repeats) are aggregated once.
    """
    prepare([p.pool for p in problems], [m for _, m in methods])
    full = stack([p.pool for p in problems], need_used=False, jobs=jobs)
    sizes = np.array([p.pool.size for p in problems])
    ks = ks or default_ks(int(sizes.max()))
    correct = _class_table(problems, full.n_classes)
    n_correct = np.array([p.n_correct for p in problems])
    P = len(problems)
    out = {"k": list(ks), "repeats": repeats, "seed": seed, "problems": P,
           "methods": {lab: {"accuracy_mean": [], "accuracy_std": [], "ece_mean": []} for lab, _ in methods},
           "pass_at_k": [], "oracle_mean": [], "tokens_mean": []}
    if bootstrap > 0:
        out["bootstrap"] = bootstrap
        for row in out["methods"].values():
            row.update(ci95_low=[], ci95_high=[])
    for k in ks:
        idx = draw_subsets(sizes, k, repeats, seed).reshape(repeats * P, -1)
        rows = np.tile(np.arange(P), repeats)
        key = np.concatenate([rows[:, None], idx], axis=1)
        uniq, inverse = np.unique(key, axis=0, return_inverse=True)
        sub = take(full, uniq[:, 0], uniq[:, 1:])
        tokens = np.nansum(sub.fields["n_tokens"], axis=1)[inverse].reshape(repeats, P)
        out["tokens_mean"].append(float(tokens.mean()))
        out["pass_at_k"].append(float(np.mean(pass_at_k(sizes, n_correct, k))))
        # The ceiling on the very subsets the methods saw: any of the K samples correct. pass@K
        # is its expectation, but next to means over a few random subsets it can sit below the
        # methods (at K = 1 every method's accuracy is this same quantity, up to sampling noise).
        hit = (sub.cls >= 0) & np.take_along_axis(correct[uniq[:, 0]], np.maximum(sub.cls, 0), axis=1)
        out["oracle_mean"].append(float(hit.any(axis=1)[inverse].reshape(repeats, P).mean()))
        per_problem = []
        for label, method in methods:
            raw, _ = method.score(sub)
            d = decide(raw, sub.cls, sub.n_classes)
            credit = tie_credit(d.winners, correct[uniq[:, 0]])[inverse].reshape(repeats, P)
            conf = d.confidence[inverse].reshape(repeats, P)
            acc = credit.mean(axis=1)
            row = out["methods"][label]
            row["accuracy_mean"].append(float(acc.mean()))
            row["accuracy_std"].append(float(acc.std()))
            row["ece_mean"].append(float(np.mean([ece(conf[r], credit[r]) for r in range(repeats)])))
            per_problem.append(credit.mean(axis=0))
        if bootstrap > 0 and methods:
            # the same problem draws at every K and for every method (seeded by seed and P)
            for (label, _), ci in zip(methods, interval(draw_means(np.vstack(per_problem), bootstrap, seed))):
                out["methods"][label]["ci95_low"].append(float(ci[0]))
                out["methods"][label]["ci95_high"].append(float(ci[1]))
    return out

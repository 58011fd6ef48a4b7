"""A pruner's accuracy-vs-cost curve from one unpruned run: each random K-subset of a problem's
samples is replayed through the pruner (strategies.pruners.replay, the engine's own scheduler
over the stored traces) in sample order, as an online run drawing those K samples would have
seen them; the survivors are aggregated and the tokens the pruned run would have generated are
its cost. The subsets are the plain curve's (core.draw_subsets, same seed), so the pruner's
curve and plain sampling are compared on the same samples.

Each subset is replayed as a prompt alone with the run's batch size: which other prompts shared
the batch online changes when rows reach their prefixes, and no subset of one stored run can
say which would have.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators.api import aggregate_pools, build_pool
from strategies.evaluation.bootstrap import draw_means, interval
from strategies.evaluation.core import _entry_credit, draw_subsets


def parse_replay(spec: str):
    """`deepconf:warmup=4,keep=0.9` or `deepprune:judge=ngram,prefix=tokens:16` -> the pruner's
    checked settings (keys are the pruner's declared options; ValueError naming the spec otherwise)."""
    from strategies.pruners.settings import resolve

    method, _, rest = spec.partition(":")
    given: dict = {}
    # split on commas that start a new key=value (a prefix spec holds a colon, not a comma)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--replay {spec!r}: {item!r} is not KEY=VALUE")
        given[key.strip().replace("-", "_")] = value
    try:
        return resolve(method.strip(), given)
    except ValueError as e:
        raise ValueError(f"--replay {spec!r}: {e}") from None


def replay_subset(record: dict, idx, tokenizer, controller, batch_size: int, stop=()) -> dict:
    """The record as the pruner would have left it had only samples `idx` (in sample order) been
    drawn: its samples cut, `skipped`, and `prune.tokens` (tokens generated). The K samples are
    numbered 0..K-1, as an online run of K would number them (DeepConf's warm-up is samples
    i < warmup)."""
    from strategies.pruners.replay import replay

    sub = dict(record)
    sub["samples"] = [{**record["samples"][j], "i": n} for n, j in enumerate(sorted(idx))]
    sub.pop("aggregates", None)
    return next(replay([sub], tokenizer, controller, batch_size=batch_size, stop=stop))


def replay_curve(run, settings, ks: list[int], tokenizer, *, repeats: int = 10, seed: int = 0,
                 batch_size: int | None = None, bootstrap: int = 10000, loaded=None, extract: str = "auto",
                 truncated: str | None = None) -> dict:
    """Per K and method of `run.methods`: accuracy mean/std over the repeats, its interval over
    problems, and per K the mean generated tokens (`tokens_mean`), samples started
    (`started_mean`) and the judge's tokens (`judge_tokens_mean`, when it has a model)."""
    from strategies.pruners import build

    ctl = build(settings, loaded)
    judge = getattr(ctl, "judge", None)
    info = next((r.get("run") for r in run.records if isinstance(r.get("run"), dict)), {}) or {}
    batch = batch_size or info.get("batch_size") or 64
    stop = info.get("stop") or ()
    sizes = np.array([len(r["samples"]) for r in run.records])
    P = len(run.records)
    out = {"k": list(ks), "methods": {lab: {"accuracy_mean": [], "accuracy_std": []} for lab, _ in run.methods},
           "tokens_mean": [], "started_mean": [], "judge_tokens_mean": []}
    if bootstrap > 0:
        for row in out["methods"].values():
            row.update(ci95_low=[], ci95_high=[])
    cache: dict = {}
    for k in ks:
        idx = draw_subsets(sizes, k, repeats, seed)
        credit = {lab: np.zeros((repeats, P)) for lab, _ in run.methods}
        tokens, started, judged = np.zeros((repeats, P)), np.zeros((repeats, P)), np.zeros((repeats, P))
        for r in range(repeats):
            for p, rec in enumerate(run.records):
                pick = tuple(int(j) for j in idx[r, p] if j < sizes[p])
                key = (p, pick)
                if key not in cache:
                    before = getattr(judge, "tokens", 0)
                    pruned = replay_subset(rec, pick, tokenizer, ctl, batch, stop)
                    cache[key] = (_credits(pruned, run.problems[p].gold, run.methods, extract, truncated),
                                  pruned["prune"]["tokens"], len(pruned["samples"]),
                                  getattr(judge, "tokens", 0) - before)
                creds, tokens[r, p], started[r, p], judged[r, p] = cache[key]
                for lab in creds:
                    credit[lab][r, p] = creds[lab]
        out["tokens_mean"].append(float(tokens.mean()))
        out["started_mean"].append(float(started.mean()))
        out["judge_tokens_mean"].append(float(judged.mean()))
        per_problem = []
        for lab, _ in run.methods:
            acc = credit[lab].mean(axis=1)
            out["methods"][lab]["accuracy_mean"].append(float(acc.mean()))
            out["methods"][lab]["accuracy_std"].append(float(acc.std()))
            per_problem.append(credit[lab].mean(axis=0))
        if bootstrap > 0 and run.methods:
            for (lab, _), ci in zip(run.methods, interval(draw_means(np.vstack(per_problem), bootstrap, seed))):
                out["methods"][lab]["ci95_low"].append(float(ci[0]))
                out["methods"][lab]["ci95_high"].append(float(ci[1]))
    out["judge"] = ({"model": judge.model_name, "params": judge.params}
                    if judge is not None and hasattr(judge, "params") else None)
    return out


def _credits(rec: dict, gold: str, methods, extract: str, truncated: str | None) -> dict:
    """Tie credit per method of the pruned record's survivors (stopped samples do not vote)."""
    pool = build_pool(rec["samples"], [m for _, m in methods], extract, truncated=truncated)
    (entries,) = aggregate_pools([pool], methods)
    return {lab: _entry_credit(entries[lab], gold)[0] for lab, _ in methods}

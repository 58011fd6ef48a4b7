"""Two runs, one method, the problems both have: is the difference real? (`tts compare`)

    from strategies.evaluation.runs import load_run, common_problems
    from strategies.evaluation.compare import compare
    (a, b), dropped = common_problems([load_run(recs_a, "A"), load_run(recs_b, "B")])
    result = compare(a, b, "majority")

Per problem each run earns the tie credit of the method's answer (as `tts eval`'s accuracy).
The difference B − A gets a paired bootstrap interval (the same draws of problems for both
runs) and an exact two-sided sign test on the problems where the credits differ: with 0/1
credits that is McNemar's exact test on the discordant pairs (scipy.stats.binomtest, p = 1/2).
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators.api import aggregate_pools, parse_methods
from strategies.evaluation.bootstrap import LEVEL, draw_means, interval
from strategies.evaluation.compute import breakdown, total
from strategies.evaluation.core import _entry_credit, common_labels


def credits(run, method: str, fresh=None) -> tuple[np.ndarray, str]:
    """(per-problem tie credit, where it came from): the recorded aggregate `method` when every
    record has it and no fresh method is given, else `fresh` (or `method` parsed) run afresh."""
    if fresh is None and method in common_labels(run.problems):
        return np.array([_entry_credit(p.aggregates[method], p.gold)[0] for p in run.problems]), "recorded"
    m = fresh if fresh is not None else parse_methods([method])[0][1]
    entries = aggregate_pools([p.pool for p in run.problems], [(method, m)])
    return np.array([_entry_credit(e[method], p.gold)[0] for e, p in zip(entries, run.problems)]), "aggregated"


def sign_test(a: np.ndarray, b: np.ndarray) -> dict:
    """Exact two-sided sign test on the problems where the credits differ (McNemar's exact test
    for 0/1 credits): under no difference each is B's way with probability 1/2."""
    from scipy.stats import binomtest

    b_better, a_better = int(np.sum(b > a)), int(np.sum(a > b))
    n = a_better + b_better
    p = float(binomtest(b_better, n, 0.5).pvalue) if n else 1.0
    return {"a_better": a_better, "b_better": b_better, "p_value": p}


def _cost(run) -> dict:
    out = {"tokens": total(run.costs, "tokens"), "by_model": breakdown(run.costs)}
    if not any(c.missing for c in run.costs) and len({c.params for c in run.costs}) == 1:
        out["flops"] = total(run.costs, "flops")
    return out


def compare(a, b, method: str = "majority", fresh=None, bootstrap: int = 10000, seed: int = 0) -> dict:
    """Accuracy of each run, B − A with its paired bootstrap interval, the sign test, the cost of
    each (mean per problem) and the problems where the two disagree. `a` and `b`: Runs on the
    same problems in the same order (runs.common_problems)."""
    if [repr(i) for i in a.ids] != [repr(i) for i in b.ids]:
        raise ValueError("the two runs must hold the same problems in the same order (common_problems)")
    ca, src_a = credits(a, method, fresh)
    cb, src_b = credits(b, method, fresh)
    out = {"method": method, "problems": len(a.ids),
           "a": {"label": a.label, "accuracy": float(ca.mean()), "credit": src_a, **_cost(a)},
           "b": {"label": b.label, "accuracy": float(cb.mean()), "credit": src_b, **_cost(b)},
           "difference": float(cb.mean() - ca.mean())}
    if bootstrap > 0:
        means = draw_means(np.vstack([ca, cb]), bootstrap, seed)
        ci = interval(means[1] - means[0])
        out["a"]["ci95"], out["b"]["ci95"] = [[float(v) for v in r] for r in interval(means)]
        out["difference_ci95"] = [float(ci[0]), float(ci[1])]
        out["bootstrap"] = {"draws": bootstrap, "seed": seed, "level": LEVEL}
    out["sign_test"] = sign_test(ca, cb)
    out["disagree"] = [{"id": i, "a": float(x), "b": float(y)} for i, x, y in zip(a.ids, ca, cb) if x != y]
    return out


def compare_table(r: dict, dropped: dict | None = None) -> str:
    def f(v):
        return f"{v:.4f}"

    lines = [f"method {r['method']} on {r['problems']} problems common to both runs"
             + (f" (dropped: {', '.join(f'{k} {v}' for k, v in dropped.items())})" if dropped and any(dropped.values()) else "")]
    w = max(len("B − A"), len(r["a"]["label"]) + 4, len(r["b"]["label"]) + 4)
    has_flops = "flops" in r["a"] and "flops" in r["b"]
    lines.append(f"{'':<{w}}  {'accuracy':>8}  {'95% CI':^18}  {'tokens':>9}" + (f"  {'FLOPs':>10}" if has_flops else ""))
    for key in ("a", "b"):
        row = r[key]
        ci = f"[{f(row['ci95'][0])}, {f(row['ci95'][1])}]" if "ci95" in row else ""
        lines.append(f"{key.upper() + ': ' + row['label']:<{w}}  {f(row['accuracy']):>8}  {ci:^18}  "
                     f"{row['tokens']:>9.1f}" + (f"  {row['flops']:>10.4g}" if has_flops else ""))
    ci = r.get("difference_ci95")
    lines.append(f"{'B − A':<{w}}  {r['difference']:>+8.4f}  "
                 + (f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
    s = r["sign_test"]
    lines.append("")
    if ci:
        lines.append(f"95% CI of B − A: paired percentile bootstrap over problems ({r['bootstrap']['draws']} draws, "
                     f"seed {r['bootstrap']['seed']}).")
    lines.append(f"problems where they differ: A better on {s['a_better']}, B better on {s['b_better']}; "
                 f"exact two-sided sign test (McNemar) p = {s['p_value']:.4g}")
    if r["disagree"]:
        lines.append("disagreements (id: A credit -> B credit): "
                     + ", ".join(f"{d['id']}: {d['a']:g} -> {d['b']:g}" for d in r["disagree"]))
    return "\n".join(lines)

"""Many runs on one cost axis: accuracy against samples, generated tokens or FLOPs per problem.

    from strategies.evaluation.runs import load_run, common_problems, cost_curves
    runs = [load_run(records_a, "a.jsonl"), load_run(records_b, "b.jsonl")]
    runs, dropped = common_problems(runs)
    result = cost_curves(runs, x="flops", ks=None, repeats=10, seed=0)

Every run is scored on the problems all runs share (matched by record id, in the first run's
order), so the bootstrap over problems draws the same problems for every run, method and K: the
intervals are paired across runs. An unpruned run gives a curve (RPC's protocol: random
K-subsets re-aggregated, the cost of the same subsets); a pruned run gives one point, its whole
cost (a K-subset of a pruned pool is not what the pruner would have run at K).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from strategies.evaluation.compute import (
    RecordCost, breakdown, is_pruned, pareto, record_cost, require, subset_cost, total,
)
from strategies.evaluation.core import Problem, curve, default_ks, load_problems
from verifiers import normalize_gold


@dataclass
class Run:
    label: str
    ids: list                      # record ids, one per problem
    problems: list[Problem]
    costs: list[RecordCost]
    records: list[dict]
    pruned: bool
    methods: list = field(default_factory=list)   # [(label, Aggregator)] to evaluate
    skipped: dict = field(default_factory=dict)   # reason -> records left out on loading

    def subset(self, keep: list[int]) -> "Run":
        return replace(self, ids=[self.ids[j] for j in keep], problems=[self.problems[j] for j in keep],
                       costs=[self.costs[j] for j in keep], records=[self.records[j] for j in keep])


def default_label(path: str, records: list[dict]) -> str:
    """The file name, its generator mode (soft: with its noise) and its pruner, from `run`."""
    run = next((r.get("run") for r in records if isinstance(r.get("run"), dict)), {}) or {}
    mode = str(run.get("mode", "?"))
    if mode == "soft" and run.get("noise") not in (None, "none"):
        mode += f"+{run['noise']}"
    parts = [mode]
    prune = run.get("prune")
    if isinstance(prune, dict) and prune.get("method"):
        parts.append(str(prune["method"]) + (" replay" if run.get("replay") else ""))
    return f"{Path(path).name} ({', '.join(parts)})"


def load_run(records: list[dict], label: str, methods=(), extract: str = "auto",
             truncated: str | None = None) -> Run:
    """A run's scorable records (a gold `answer` and `samples`), their problems and costs.
    Records whose id repeats an earlier one are left out (counted in `skipped`)."""
    kept, scored, ids, seen, dup = [], [], [], set(), 0
    for pos, rec in enumerate(records):
        if isinstance(rec.get("samples"), list) and normalize_gold(rec.get("answer")) is not None:
            rid = rec.get("id", f"line {pos + 1}")
            if repr(rid) in seen:
                dup += 1
                continue
            seen.add(repr(rid))
            scored.append(rec)
            ids.append(rid)
        kept.append(rec)
    problems, skipped = load_problems(kept, list(methods), extract, truncated)
    skipped["duplicate_id"] = dup
    return Run(label, ids, problems, [record_cost(r) for r in scored], scored,
               pruned=any(is_pruned(r) for r in scored), skipped=skipped)


def common_problems(runs: list[Run]) -> tuple[list[Run], dict]:
    """The runs restricted to the problems (record ids) every run has, in the first run's order;
    and per run label how many problems that dropped."""
    shared = set.intersection(*(set(map(repr, r.ids)) for r in runs)) if runs else set()
    order = [repr(i) for i in runs[0].ids if repr(i) in shared] if runs else []
    out, dropped = [], {}
    for r in runs:
        where = {repr(i): j for j, i in enumerate(r.ids)}
        out.append(r.subset([where[k] for k in order]))
        dropped[r.label] = len(r.ids) - len(order)
    return out, dropped


def _distinct_labels(runs: list[Run]) -> None:
    if len({r.label for r in runs}) != len(runs):
        raise ValueError("two runs have the same label; give each its own with --label")


def cost_curves(runs: list[Run], x: str = "tokens", ks: list[int] | None = None, repeats: int = 10,
                seed: int = 0, jobs: int = 1, bootstrap: int = 10000, replays: list | None = None) -> dict:
    """Every (run, method, K) point: accuracy (mean over the repeats' subsets), its std over
    subset draws, its 95% bootstrap interval over problems, and its mean cost per problem along
    `x` (samples | tokens | flops); `pareto` marks the points no other point beats at no more
    cost. Raises compute.CostError when a run lacks a field the axis needs.

    `replays`: (run, label, curve) triples of replayed.replay_curve results, drawn as curves of
    their own beside the runs."""
    _distinct_labels(runs)
    for r in runs:
        require(r.costs, x, r.label)
    P = len(runs[0].problems) if runs else 0
    points = []
    for r in runs:
        sizes = [p.pool.size for p in r.problems]
        if r.pruned:
            k_all = max(sizes)
            c = curve(r.problems, r.methods, [k_all], repeats=1, seed=seed, jobs=jobs, bootstrap=bootstrap)
            for label, row in c["methods"].items():
                points.append(_point(r, label, row, 0, k=None, cost=total(r.costs, x),
                                     tokens=breakdown(r.costs)))
            continue
        run_ks = ks or default_ks(max(sizes))
        c = curve(r.problems, r.methods, run_ks, repeats=repeats, seed=seed, jobs=jobs, bootstrap=bootstrap)
        fixed = breakdown(r.costs)
        for j, k in enumerate(run_ks):
            gen = c["tokens_mean"][j]
            for label, row in c["methods"].items():
                points.append(_point(r, label, row, j, k=k, cost=subset_cost(r.costs, x, k, gen),
                                     tokens={**fixed, "generated": gen}))
    for r, label, c in replays or []:
        judge = c.get("judge")
        for j, k in enumerate(c["k"]):
            gen = c["tokens_mean"][j]
            if x == "samples":
                cost = c["started_mean"][j]
            else:
                cost = subset_cost(r.costs, x, k, gen)
                if x == "flops" and judge:
                    cost += 2.0 * judge["params"] * c["judge_tokens_mean"][j]
            tokens = {**breakdown(r.costs), "generated": gen}
            if judge:
                tokens["judge"] = c["judge_tokens_mean"][j]
            for method, row in c["methods"].items():
                points.append(_point(replace(r, label=label), method, row, j, k=k, cost=cost, tokens=tokens))
    front = set(pareto([p["cost"] for p in points], [p["accuracy"] for p in points]).tolist()) if points else set()
    for j, p in enumerate(points):
        p["pareto"] = j in front
    return {"x": x, "problems": P, "repeats": repeats, "seed": seed, "bootstrap": bootstrap,
            "runs": [{"label": r.label, "curve": not r.pruned, "methods": [m for m, _ in r.methods]} for r in runs]
            + [{"label": label, "curve": True, "replay": True, "methods": list(c["methods"])}
               for _, label, c in replays or []],
            "points": points}


def _point(run: Run, method: str, row: dict, j: int, k, cost: float, tokens: dict) -> dict:
    out = {"run": run.label, "method": method, "k": k, "accuracy": row["accuracy_mean"][j],
           "accuracy_std": row["accuracy_std"][j]}
    if "ci95_low" in row:
        out["ci95"] = [row["ci95_low"][j], row["ci95_high"][j]]
    out.update({"cost": cost, "tokens": tokens})
    return out


UNITS = {"samples": "samples per problem", "tokens": "generated tokens per problem",
         "flops": "FLOPs per problem (2 x non-embedding params per token)"}


def cost_table(res: dict, dropped: dict | None = None) -> str:
    """The points as a table, one line per (run, method, K); * marks the Pareto frontier."""
    lines = [f"{res['problems']} problems common to all runs; cost: mean {UNITS[res['x']]}."]
    if res.get("bootstrap"):
        lines.append(f"[lo, hi]: 95% bootstrap interval over the problems ({res['bootstrap']} draws, the same "
                     "problems for every run); ± : std over subset draws.")
    lines.append("* : on the Pareto frontier (no other point is as accurate for less cost).")
    rw = max([3] + [len(p["run"]) for p in res["points"]])
    mw = max([6] + [len(p["method"]) for p in res["points"]])
    lines.append(f"{'run':<{rw}}  {'method':<{mw}}  {'K':>5}  {'accuracy':>17}  {'95% CI':^18}  {'cost':>10}")
    for p in res["points"]:
        k = "all" if p["k"] is None else str(p["k"])
        ci = f"[{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}]" if "ci95" in p else ""
        cost = f"{p['cost']:.4g}" if res["x"] == "flops" else f"{p['cost']:.1f}"
        lines.append(f"{p['run']:<{rw}}  {p['method']:<{mw}}  {k:>5}  "
                     f"{p['accuracy']:.4f} ± {p['accuracy_std']:.4f}  {ci:^18}  {cost:>10}"
                     + ("  *" if p["pareto"] else ""))
    return "\n".join(lines)


def plot_cost(res: dict, path: str, title: str | None = None) -> None:
    """Accuracy against cost (log axis): one line per (run, method) with its 95% interval over
    problems as a band, a pruned run as one point with bars, the Pareto frontier as a black step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=150)
    lines: dict = {}
    for p in res["points"]:
        lines.setdefault((p["run"], p["method"]), []).append(p)
    for (run, method), pts in lines.items():
        xs = np.array([p["cost"] for p in pts])
        ys = np.array([p["accuracy"] for p in pts])
        label = f"{run}: {method}"
        if len(pts) == 1 and pts[0]["k"] is None:
            yerr = None
            if "ci95" in pts[0]:
                yerr = [[ys[0] - pts[0]["ci95"][0]], [pts[0]["ci95"][1] - ys[0]]]
            ax.errorbar(xs, ys, yerr=yerr, fmt="s", markersize=5, capsize=3, label=label + " (one run)")
            continue
        line, = ax.plot(xs, ys, marker="o", markersize=3, label=label)
        if "ci95" in pts[0]:
            ax.fill_between(xs, [p["ci95"][0] for p in pts], [p["ci95"][1] for p in pts],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    front = sorted((p["cost"], p["accuracy"]) for p in res["points"] if p["pareto"])
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="black", linewidth=1, label="Pareto frontier")
        ax.scatter(fx, fy, s=40, facecolors="none", edgecolors="black", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel(f"mean {UNITS[res['x']]} (log)\nbands: 95% bootstrap interval over problems")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"Accuracy vs compute ({res['problems']} common problems)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

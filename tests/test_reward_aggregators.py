"""`best-of-n` and `weighted-best-of-n` (a per-sample reward from any verifier) against brute force
on hand-built and random pools, alone and inside `tts eval --curve`."""
import json
import math

import numpy as np
import pytest

from strategies.aggregators.api import aggregate_pools, build_pool, parse_methods
from strategies.aggregators.base import PoolError
from strategies.evaluation import curve, load_problems
from strategies.evaluation.core import draw_subsets
from tests.cli import tts


def s(i, pred, reward=None, **extra):
    out = {"i": i, "pred": pred, "text": f"t{i}", "n_tokens": 4, **extra}
    if reward is not None:
        out["reward"] = reward
    return out


def run(spec, samples):
    return aggregate_pools([build_pool(samples)], parse_methods([spec]))[0][spec]


# --- brute force: loops over the samples, no numpy, none of the aggregators' helpers ----------

def brute_best(samples, field="reward"):
    best = {}
    for x in samples:
        if x["pred"] is None:
            continue
        best[x["pred"]] = max(best.get(x["pred"], -math.inf), x[field])
    if not best:
        return {}, [], set()
    top = max(best.values())
    z = sum(math.exp(v - top) for v in best.values())
    scores = {a: math.exp(v - top) / z for a, v in best.items()}
    used = [x["i"] for x in samples if x["pred"] is not None and x[field] == best[x["pred"]]]
    winners = {a for a, v in best.items() if v == top}
    return scores, used, winners


def brute_weighted(samples, reduce="sum", field="reward"):
    total, count = {}, {}
    for x in samples:
        if x["pred"] is None:
            continue
        total[x["pred"]] = total.get(x["pred"], 0.0) + x[field]
        count[x["pred"]] = count.get(x["pred"], 0) + 1
    raw = {a: total[a] / count[a] if reduce == "mean" else total[a] for a in total}
    z = sum(raw.values())
    scores = {a: v / z for a, v in raw.items()} if z > 0 else {a: 1 / len(raw) for a in raw}
    used = [x["i"] for x in samples if x["pred"] is not None]
    top = max(scores.values()) if scores else None
    return scores, used, {a for a, v in scores.items() if v >= top - 1e-12}


def check(entry, scores, used):
    assert entry["scores"].keys() == scores.keys()
    for a, v in scores.items():
        assert entry["scores"][a] == pytest.approx(v, abs=1e-12), a
    top = max(scores.values())
    first = next(a for a in entry["scores"] if scores[a] >= top - 1e-12)
    assert entry["answer"] == first and entry["confidence"] == pytest.approx(top, abs=1e-12)
    assert entry["used"] == used


# A pool where the verifier and the vote disagree: A has most samples and the largest reward sum,
# C has the single best sample, B the best mean; s6 has the highest reward but no answer.
POOL = [s(0, "A", 0.5), s(1, "A", 0.45), s(2, "A", 0.4), s(3, "B", 0.7), s(4, "B", 0.6),
        s(5, "C", 0.9), s(6, None, 0.99)]


def test_best_of_n_on_a_hand_built_pool():
    e = run("best-of-n", POOL)
    check(e, *brute_best(POOL)[:2])
    assert e["answer"] == "C" and e["used"] == [0, 3, 5]


def test_weighted_best_of_n_sum_and_mean():
    e = run("weighted-best-of-n", POOL)
    check(e, *brute_weighted(POOL)[:2])
    assert e["answer"] == "A"   # sum 1.35 against B's 1.3 and C's 0.9
    m = run("weighted-best-of-n:reduce=mean", POOL)
    check(m, *brute_weighted(POOL, "mean")[:2])
    assert m["answer"] == "C"


def test_negative_rewards_rank_in_best_of_n():
    pool = [s(0, "A", -3.0), s(1, "B", -1.0), s(2, "B", -7.5), s(3, "C", -2.0)]
    e = run("best-of-n", pool)
    check(e, *brute_best(pool)[:2])
    assert e["answer"] == "B"


def test_ties_are_visible_and_answered_by_first_appearance():
    pool = [s(0, "A", 0.2), s(1, "B", 0.8), s(2, "A", 0.8), s(3, "C", 0.1)]
    e = run("best-of-n", pool)
    scores, used, winners = brute_best(pool)
    check(e, scores, used)
    assert winners == {"A", "B"} and e["answer"] == "A"
    assert e["scores"]["A"] == e["scores"]["B"]


def test_field_option_reads_another_number():
    pool = [s(0, "A", 0.9, judge=1), s(1, "B", 0.1, judge=4), s(2, "B", 0.2, judge=2)]
    for spec, brute in (("best-of-n:field=judge", brute_best), ("weighted-best-of-n:field=judge", brute_weighted)):
        e = run(spec, pool)
        check(e, *brute(pool, field="judge")[:2])
        assert e["answer"] == "B" and e["opts"]["field"] == "judge"


@pytest.mark.parametrize("seed", range(20))
def test_random_pools_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    # rewards on a coarse grid so that ties occur
    pool = [s(j, None if rng.random() < 0.2 else "ABCD"[rng.integers(0, 4)], float(rng.integers(0, 5)) / 4)
            for j in range(n)]
    if all(x["pred"] is None for x in pool):
        pool[0]["pred"] = "A"
    for spec, brute in (("best-of-n", brute_best), ("weighted-best-of-n", brute_weighted),
                        ("weighted-best-of-n:reduce=mean", lambda p: brute_weighted(p, "mean"))):
        e = run(spec, pool)
        scores, used, winners = brute(pool)
        check(e, scores, used)
        got = {a for a, v in e["scores"].items() if v >= max(e["scores"].values()) - 1e-12}
        assert got == winners, spec


def test_a_missing_reward_is_refused_naming_the_sample():
    pool = [s(0, "A", 0.5), s(1, "B"), s(2, None)]   # s2 has no answer: it may lack a reward
    for spec in ("best-of-n", "weighted-best-of-n"):
        with pytest.raises(PoolError, match=r"needs `reward`.*sample 1.*tts score"):
            build_pool(pool, [m for _, m in parse_methods([spec])])
    run("best-of-n", [s(0, "A", 0.5), s(2, None)])  # unanswered samples without reward are fine
    with pytest.raises(PoolError, match="not a finite number"):
        build_pool([s(0, "A", "high")], [m for _, m in parse_methods(["best-of-n"])])


def test_weighted_refuses_a_negative_reward():
    with pytest.raises(PoolError, match=r">= 0.*sample 1.*best-of-n"):
        build_pool([s(0, "A", 0.5), s(1, "B", -0.2)], [m for _, m in parse_methods(["weighted-best-of-n"])])


def test_cli_refuses_with_one_line_naming_the_input_line():
    recs = [{"id": 0, "samples": [s(0, "A", 0.5)]}, {"id": 1, "samples": [s(0, "A", 0.5), s(1, "B")]}]
    r = tts("aggregate", "-", "-a", "best-of-n", "-a", "majority",
            input="".join(json.dumps(x) + "\n" for x in recs))
    assert r.code == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "tts: error: <stdin> line 2: method best-of-n needs `reward` in every sample with an answer "
        "(sample 1 has none); add it with `tts score`"]


def test_cli_writes_the_entries_and_eval_reads_them():
    recs = [{"id": 0, "answer": "7", "samples": [s(0, "7", 0.9), s(1, "5", 0.1), s(2, "5", 0.2)]},
            {"id": 1, "answer": "3", "samples": [s(0, "4", 0.3), s(1, "3", 0.4)]}]
    r = tts("aggregate", "-", "-a", "best-of-n", "-a", "majority", input="".join(json.dumps(x) + "\n" for x in recs))
    assert r.code == 0, r.stderr
    out = r.records()
    assert [o["aggregates"]["best-of-n"]["answer"] for o in out] == ["7", "3"]
    ev = tts("eval", "-", "--json", "--bootstrap", "0", input=r.stdout)
    assert ev.code == 0, ev.stderr
    table = json.loads(ev.stdout)
    assert table["methods"]["best-of-n"]["accuracy"] == 1.0
    assert table["methods"]["majority"]["accuracy"] == 0.25  # 0 on the first, a two-way tie on the second


def test_curve_equals_brute_force_on_every_subset():
    rng = np.random.default_rng(3)
    records = [{"answer": "1", "samples": [s(j, str(rng.integers(0, 3)), float(rng.uniform(0, 1)))
                                           for j in range(int(rng.integers(5, 10)))]} for _ in range(7)]
    methods = parse_methods(["best-of-n", "weighted-best-of-n", "weighted-best-of-n:reduce=mean"])
    problems, _ = load_problems(records, [m for _, m in methods])
    sizes = np.array([len(r["samples"]) for r in records])
    k, repeats, seed = 3, 4, 9
    got = curve(problems, methods, [k], repeats=repeats, seed=seed, bootstrap=0)
    idx = draw_subsets(sizes, k, repeats, seed)
    brutes = {"best-of-n": brute_best, "weighted-best-of-n": brute_weighted,
              "weighted-best-of-n:reduce=mean": lambda p: brute_weighted(p, "mean")}
    for label, brute in brutes.items():
        accs = []
        for rep in range(repeats):
            credit = []
            for p, rec in enumerate(records):
                _, _, winners = brute([rec["samples"][j] for j in idx[rep, p] if j < sizes[p]])
                credit.append(("1" in winners) / len(winners))
            accs.append(np.mean(credit))
        assert got["methods"][label]["accuracy_mean"][0] == pytest.approx(np.mean(accs), abs=1e-12), label

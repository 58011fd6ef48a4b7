"""Aggregators against hand computations, the RPC conformance vectors and a direct RPC port."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from strategies.aggregators import REGISTRY
from strategies.aggregators.api import aggregate_pools, aggregate_records, build_pool, parse_methods
from strategies.aggregators.base import PoolError
from strategies.aggregators.weibull import X0, _single_threaded_blas, fit_mixture, neg_log_likelihood

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VECTORS = SHARED / "conformance" / "rpc_vectors.json"


def sample(i, pred, mlp=-1.0, sc=1.0, conf=1.0, text=None, **extra):
    return {"i": i, "pred": pred, "text": text if text is not None else f"text {i}", "mean_logprob": mlp,
            "logprob": mlp * 10, "n_tokens": 10, "self_certainty": sc, "confidence": conf, **extra}


# A pool on which the methods disagree. s3 and s4 are the same text (PC counts it once); s7 has no
# answer, so it never votes although it is the most probable and most certain sample.
POOL = [
    sample(0, "A", -2.0, 1.0, 1.0), sample(1, "A", -2.0, 1.1, 1.0), sample(2, "A", -2.0, 1.2, 1.0),
    sample(3, "B", -0.1, 2.0, 5.0, text="same"), sample(4, "B", -0.1, 2.0, 5.0, text="same"),
    sample(5, "C", -0.05, 0.5, 2.0), sample(6, "D", -3.0, 9.0, 1.0), sample(7, None, -0.01, 10.0, 10.0),
]


def run(spec, samples=POOL, opts=()):
    return aggregate_pools([build_pool(samples)], parse_methods([spec], opts))[0][spec]


def expect(entry, scores, used):
    assert entry["answer"] == max(scores, key=scores.get)
    assert entry["scores"].keys() == scores.keys()
    for a, v in scores.items():
        assert entry["scores"][a] == pytest.approx(v, abs=1e-12), a
    assert entry["confidence"] == pytest.approx(max(scores.values()), abs=1e-12)
    assert entry["used"] == used


def normalised(raw):
    total = sum(raw.values())
    return {a: v / total for a, v in raw.items()}


def test_majority():
    expect(run("majority"), normalised({"A": 3, "B": 2, "C": 1, "D": 1}), [0, 1, 2, 3, 4, 5, 6])


def test_weighted_variants():
    e = math.exp
    expect(run("weighted"), normalised({"A": 3 * e(-2), "B": 2 * e(-0.1), "C": e(-0.05), "D": e(-3)}),
           [0, 1, 2, 3, 4, 5, 6])
    expect(run("weighted:reduce=mean"), normalised({"A": e(-2), "B": e(-0.1), "C": e(-0.05), "D": e(-3)}),
           [0, 1, 2, 3, 4, 5, 6])
    # unnormalised: exp(sum logprob) = exp(10 * mean) here
    expect(run("weighted", opts=["weight=unnormalized"]),
           normalised({"A": 3 * e(-20), "B": 2 * e(-1), "C": e(-0.5), "D": e(-30)}), [0, 1, 2, 3, 4, 5, 6])


def test_unnormalised_weights_do_not_underflow_on_long_texts():
    pool = [sample(0, "A", text="a", logprob=-2000.0), sample(1, "B", text="b", logprob=-2001.0)]
    for s in pool:
        s.pop("mean_logprob")
    expect(run("weighted:weight=unnormalized", pool), normalised({"A": 1.0, "B": math.exp(-1)}), [0, 1])


def test_pc_counts_identical_texts_once():
    e = math.exp
    expect(run("pc"), normalised({"A": 3 * e(-2), "B": e(-0.1), "C": e(-0.05), "D": e(-3)}), [0, 1, 2, 3, 5, 6])


def test_ppl_and_self_certainty_pick_the_best_sample():
    e = math.exp
    # an answer scores its best sample: exp(mean_logprob) for PPL, self-certainty for Best-of-N
    expect(run("ppl"), normalised({"A": e(-2), "B": e(-0.1), "C": e(-0.05), "D": e(-3)}), [0, 1, 2, 3, 4, 5, 6])
    expect(run("self-certainty"), normalised({"A": 1.2, "B": 2.0, "C": 0.5, "D": 9.0}), [2, 3, 4, 5, 6])


def test_borda_by_hand():
    # rank=all (default): 8 samples; the unanswered s7 is 1st and casts no vote, s6 2nd, s3/s4 tie
    # for 3rd, s2 5th, s1 6th, s0 7th, s5 8th. rank=answered: the 7 voters alone, s6 1st ... s5
    # 7th. Here both give the same votes, (N - r + 1) being the same for every voter.
    def votes(p):
        return normalised({"A": 4 ** p + 3 ** p + 2 ** p, "B": 2 * 6 ** p, "C": 1.0, "D": 7 ** p})
    used = [0, 1, 2, 3, 4, 5, 6]
    for spec in ("borda", "borda:rank=answered"):
        expect(run(spec), votes(0.5), used)
        expect(run(spec, opts=["p=3"]), votes(3.0), used)
        assert run(spec, opts=["borda.p=3"])["answer"] == "B"
        expect(run(spec, opts=["p=0"]), normalised({"A": 3, "B": 2, "C": 1, "D": 1}), used)  # p = 0 is majority


def borda_by_loop(preds, sc, p, rank_all):
    """methods.md §3 written out: sort, give each sample its rank, add (N - r + 1)^p per answer."""
    ranked = [j for j in range(len(preds)) if rank_all or preds[j] is not None]
    order = sorted(ranked, key=lambda j: -sc[j])
    total = {}
    for r, j in enumerate(order, start=1):  # no ties in these self-certainties
        if preds[j] is not None:
            total[preds[j]] = total.get(preds[j], 0.0) + (len(ranked) - r + 1) ** p
    return normalised(total)


def test_borda_ranks_unanswered_samples_as_the_reference_does():
    # 100 samples: answer A at ranks 1-2, B at 3-5, 95 unanswered below them
    preds = ["A", "A", "B", "B", "B"] + [None] * 95
    pool = [sample(j, a, sc=200.0 - j) for j, a in enumerate(preds)]
    sc = [200.0 - j for j in range(100)]
    ref = run("borda", pool)
    assert ref["answer"] == "B"  # sqrt(98)+sqrt(97)+sqrt(96) = 29.5 > sqrt(100)+sqrt(99) = 19.9
    assert ref["scores"] == pytest.approx(borda_by_loop(preds, sc, 0.5, True), abs=1e-12)
    ours = run("borda:rank=answered", pool)
    assert ours["answer"] == "A"  # sqrt(5)+sqrt(4) = 4.24 > sqrt(3)+sqrt(2)+1 = 4.15
    assert ours["scores"] == pytest.approx(borda_by_loop(preds, sc, 0.5, False), abs=1e-12)


def test_borda_padding_is_not_a_sample():
    # Pools of different sizes share one padded batch (as in tts aggregate and eval --curve): each
    # must score as it does alone. An unanswered sample without a self-certainty still counts in N.
    small = [sample(0, "A", sc=3.0), sample(1, None, sc=9.0), sample(2, "B", sc=2.0), sample(3, "B", sc=1.0)]
    small.append({"i": 4, "pred": None, "text": "no signal"})
    big = [sample(j, "AB"[j % 2], sc=float(j)) for j in range(11)]
    methods = parse_methods(["borda"])
    together = aggregate_pools([build_pool(small), build_pool(big)], methods)
    assert together[0] == aggregate_pools([build_pool(small)], methods)[0]
    assert together[1] == aggregate_pools([build_pool(big)], methods)[0]
    # small, N = 5: s1 rank 1 (no vote), A rank 2, B ranks 3 and 4, the signal-less sample last
    want = normalised({"A": 4 ** 0.5, "B": 3 ** 0.5 + 2 ** 0.5})
    assert together[0]["borda"]["scores"] == pytest.approx(want, abs=1e-12)


def test_competition_rank_equals_counting_larger_values():
    from strategies.aggregators.borda import competition_rank

    rng = np.random.default_rng(0)
    v = np.round(rng.normal(size=(200, 12)), 1)  # rounding makes ties
    v[v < -1] = -np.inf                           # non-voters
    assert np.array_equal(competition_rank(v), 1 + (v[:, None, :] > v[:, :, None]).sum(axis=2))


def test_deepconf_keep_fraction_by_hand():
    # voters' confidences 1,1,1,5,5,2,1: the 10th percentile is 1 (all kept), the 90th is 5
    expect(run("deepconf"), normalised({"A": 3.0, "B": 10.0, "C": 2.0, "D": 1.0}), [0, 1, 2, 3, 4, 5, 6])
    expect(run("deepconf:keep=0.1"), {"A": 0.0, "B": 1.0, "C": 0.0, "D": 0.0}, [3, 4])


def window_means_by_loop(c, w):
    if len(c) <= w:
        return [sum(c) / len(c)]
    return [sum(c[i:i + w]) / w for i in range(len(c) - w + 1)]


def test_deepconf_trace_scores_match_direct_loops():
    rng = np.random.default_rng(1)
    traces = [list(np.round(rng.uniform(0, 10, n), 3)) for n in (7, 30, 45)]
    pool = [sample(j, "XYZ"[j], conf=0.0, trace={"confidence": t}) for j, t in enumerate(traces)]
    by_score = {
        "tail": lambda c: float(np.mean(c[-5:])),
        "min": lambda c: min(window_means_by_loop(c, 8)),
        "bottom": lambda c: float(np.mean(sorted(window_means_by_loop(c, 8))[:max(1, len(window_means_by_loop(c, 8)) // 10)])),
        "mean": lambda c: float(np.mean(c)),
    }
    for score, fn in by_score.items():
        got = run(f"deepconf:score={score},window=8,tail=5,keep=1", pool)
        want = normalised({a: fn(t) for a, t in zip("XYZ", traces)})
        assert got["scores"] == pytest.approx(want, abs=1e-12), score


def test_deepconf_without_trace_says_to_rerun_with_trace():
    # POOL's samples have 10 tokens: longer than a window of 8 or a tail of 5
    for spec in ("deepconf:window=8", "deepconf:score=min,window=8", "deepconf:score=tail,tail=5"):
        with pytest.raises(PoolError, match="--trace"):
            run(spec)
    assert run("deepconf:score=mean")["answer"] == "B"  # the per-sample summary is enough for mean


def test_deepconf_default_is_bottom_ten_percent_keep_0_9():
    from strategies.aggregators.deepconf import DeepConf

    assert (DeepConf().opts["score"], DeepConf().opts["window"], DeepConf().opts["keep"]) == ("bottom", 2048, 0.9)
    rng = np.random.default_rng(2)
    traces = [list(np.round(rng.uniform(0, 10, n), 3)) for n in (40, 60, 50, 45)]
    # on traces longer than the window: the bottom-10% group confidence from the trace
    pool = [sample(j, "XYZX"[j], conf=0.0, trace={"confidence": t}, n_tokens=len(t)) for j, t in enumerate(traces)]
    c = [float(np.mean(sorted(window_means_by_loop(t, 8))[:max(1, len(window_means_by_loop(t, 8)) // 10)]))
         for t in traces]
    threshold = np.percentile(c, 10)  # keep 0.9: drop what is below the 10th percentile
    want = {}
    for a, ci in zip("XYZX", c):
        want[a] = want.get(a, 0.0) + (ci if ci >= threshold else 0.0)
    assert run("deepconf:window=8", pool)["scores"] == pytest.approx(normalised(want), abs=1e-12)
    # a sample no longer than the window: the whole-trace mean, which is its `confidence` summary,
    # so the default needs no trace there
    short = [sample(j, "XYZX"[j], conf=float(np.mean(t)), n_tokens=len(t)) for j, t in enumerate(traces)]
    with_trace = [dict(s, trace={"confidence": t}) for s, t in zip(short, traces)]
    assert run("deepconf", short)["scores"] == pytest.approx(run("deepconf", with_trace)["scores"], abs=1e-12)


def test_ties_are_reported_not_hidden():
    pool = [sample(0, "7"), sample(1, "5"), sample(2, "5.0"), sample(3, "7"), sample(4, None)]
    e = run("majority", pool)
    assert e["answer"] == "7" and e["scores"] == {"7": 0.5, "5": 0.5} and e["confidence"] == 0.5


def test_no_answer_at_all():
    e = run("majority", [sample(0, None), sample(1, None)])
    assert e["answer"] is None and e["scores"] == {} and e["used"] == [] and e["confidence"] == 0.0


def test_option_errors():
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods(["nope"])
    with pytest.raises(ValueError, match="does not apply"):
        parse_methods(["majority"], ["p=2"])
    with pytest.raises(ValueError, match="must be one of"):
        parse_methods(["weighted:weight=cubic"])
    with pytest.raises(ValueError, match="bad value"):
        parse_methods(["borda:p=high"])
    with pytest.raises(ValueError, match="keep"):
        parse_methods(["deepconf:keep=0"])


def test_method_needs_are_checked():
    pool = [dict(s) for s in POOL]
    del pool[2]["self_certainty"]
    with pytest.raises(PoolError, match="self_certainty.*sample 2"):
        build_pool(pool, [m for _, m in parse_methods(["borda"])])


def test_help_lists_every_method_and_option():
    from tts_cli.commands._common import METHODS_HELP

    for name, cls in REGISTRY.items():
        assert f"  {name} " in METHODS_HELP
        for opt in cls.options:
            assert f"{opt}=" in METHODS_HELP, (name, opt)


def test_existing_pred_is_kept_and_missing_pred_is_extracted():
    rec = {"samples": [{"i": 0, "text": r"so \boxed{12}", "pred": "13"}, {"i": 1, "text": r"so \boxed{12}"},
                       {"i": 2, "text": "the answer is 12"}]}
    out = next(aggregate_records([rec], parse_methods(["majority"])))
    assert [s["pred"] for s in out["samples"]] == ["13", "12", "12"]
    assert out["aggregates"]["majority"]["answer"] == "12"


# --- RPC --------------------------------------------------------------------------------------

def rpc_reference(samples):
    """methods.md §3, written out directly: scipy.optimize.minimize, loops, no batching."""
    from scipy.optimize import minimize
    from scipy.special import gamma

    def pdf(x, k, lam):
        return (k / lam) * (x / lam) ** (k - 1) * np.exp(-((x / lam) ** k))

    x = np.exp(np.array([s["mean_logprob"] for s in samples]))
    with np.errstate(all="ignore"), _single_threaded_blas():  # threads only slow tiny problems down
        w, k1, l1, k2, l2 = minimize(neg_log_likelihood, [0.5, 1, 1, 1.5, 2], args=(x,),
                                     bounds=[(0.2, 0.8)] + [(0.01, None)] * 4).x
        if l1 * gamma(1 + 1 / k1) < l2 * gamma(1 + 1 / k2):
            k1, l1, k2, l2, w = k2, l2, k1, l1, 1 - w
        scores, seen = {}, set()
        for s, xi in zip(samples, x):
            scores.setdefault(s["pred"], 0.0)
            p_hi, p_lo = w * pdf(xi, k1, l1), (1 - w) * pdf(xi, k2, l2)
            post_hi = p_hi / (p_hi + p_lo)
            if (post_hi < 1 - post_hi and xi < x.mean()) or s["text"] in seen:
                continue
            seen.add(s["text"])
            scores[s["pred"]] += xi
    return normalised(scores)


@pytest.mark.skipif(not VECTORS.exists(), reason="../shared/conformance/rpc_vectors.json not present")
def test_rpc_conformance_vectors():
    cases = json.loads(VECTORS.read_text())["cases"]
    records = [{"samples": [{"i": j, "pred": s["answer"], "text": s["text"], "mean_logprob": s["mean_logprob"]}
                            for j, s in enumerate(c["samples"])]} for c in cases]
    for case, rec in zip(cases, aggregate_records(records, parse_methods(["rpc"]))):
        got, want = rec["aggregates"]["rpc"], case["expected"]
        assert got["scores"].keys() == want["rpc_scores"].keys(), case["id"]
        for a, v in want["rpc_scores"].items():
            assert abs(got["scores"][a] - v) <= 1e-6, (case["id"], a)
        top = max(got["scores"].values())
        assert [a for a, v in got["scores"].items() if v >= top - 1e-12] == want["rpc_winners"], case["id"]
        assert got["answer"] == want["rpc_winners"][0]


def random_pool(rng, n, answers=4):
    preds = [str(a) for a in rng.integers(0, answers, n)]
    return [sample(j, p, float(-rng.gamma(2.0, 0.2)), text=f"t{j % max(1, n - 2)}") for j, p in enumerate(preds)]


def test_rpc_matches_a_direct_port_on_random_pools():
    rng = np.random.default_rng(7)
    pools = [random_pool(rng, n) for n in (3, 5, 8, 12, 16, 24)]
    for pool in pools:  # identical texts must have identical probabilities
        first = {}
        for s in pool:
            s["mean_logprob"] = first.setdefault(s["text"], s["mean_logprob"])
    got = aggregate_pools([build_pool(p) for p in pools], parse_methods(["rpc"]))
    for pool, out in zip(pools, got):
        assert out["rpc"]["scores"] == pytest.approx(rpc_reference(pool), abs=1e-12)


def test_batched_fit_is_bitwise_scipy_minimize_and_batch_independent():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    X = np.exp(-rng.gamma(2.0, 0.2, size=(4, 9)))
    with _single_threaded_blas():
        want = np.array([minimize(neg_log_likelihood, X0, args=(x,), bounds=[(0.2, 0.8)] + [(0.01, None)] * 4).x
                         for x in X])
    assert np.array_equal(fit_mixture(X), want)
    assert np.array_equal(np.concatenate([fit_mixture(X[:1]), fit_mixture(X[1:])]), want)


def test_aggregate_cuts_texts_at_a_new_turn_and_stop_at_sets_the_markers():
    import json

    from tests.cli import tts

    rec = {"id": 1, "samples": [{"i": 0, "text": "The answer is 5.\n\nQuestion: next?\nThe answer is 4.",
                                 "finish": "stop"},
                                {"i": 1, "text": "The answer is 6.\nStudent: and?\nThe answer is 8.",
                                 "finish": "stop"}]}
    line = json.dumps(rec) + "\n"
    preds = lambda *opts: [s["pred"] for s in tts("aggregate", "-a", "majority", *opts, input=line).records()[0]["samples"]]
    assert preds() == ["5", "8"]
    assert preds("--stop-at", "Student:") == ["4", "6"]
    assert preds("--stop-at", "") == ["4", "8"]

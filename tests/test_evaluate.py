"""Metrics against brute force, curves against per-subset aggregation, and the eval CLI."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from strategies.aggregators.api import aggregate_pools, build_pool, parse_methods
from strategies.evaluation import curve, default_ks, load_problems, summarize
from strategies.evaluation.core import draw_subsets
from strategies.evaluation.metrics import brier, ece, pass_at_k, tie_credit
from tts_cli.app import app


@pytest.mark.parametrize("n", [1, 4, 7])
def test_pass_at_k_equals_enumeration_of_subsets(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k([n], [c], k)[0] == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_with_k_above_n_uses_all_samples():
    assert pass_at_k([3, 3], [0, 1], 8).tolist() == [0.0, 1.0]


def test_ece_equals_a_direct_loop():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 500)
    conf[:5] = [0.0, 1.0, 0.1, 0.2, 0.9999]
    credit = (rng.uniform(0, 1, 500) < conf).astype(float)
    credit[:20] = 0.5
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        members = [i for i in range(500) if lo <= conf[i] < hi or (b == 9 and conf[i] == 1.0)]
        if members:
            acc = sum(credit[i] for i in members) / len(members)
            avg = sum(conf[i] for i in members) / len(members)
            total += len(members) / 500 * abs(acc - avg)
    assert ece(conf, credit) == pytest.approx(total, abs=1e-12)
    assert brier([1.0, 0.25], [1.0, 0.0]) == pytest.approx(0.03125)


def test_tie_credit():
    winners = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    correct = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    assert tie_credit(winners, correct).tolist() == pytest.approx([0.5, 0.0, 0.0, 1 / 3])


def test_default_ks():
    assert default_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert default_ks(10) == [1, 2, 4, 8, 10]
    assert default_ks(1) == [1]


def s(i, pred, mlp=-0.5, n_tokens=10):
    return {"i": i, "pred": pred, "text": f"t{i}", "mean_logprob": mlp, "n_tokens": n_tokens,
            "self_certainty": 1.0 + i, "confidence": 1.0}


RECORDS = [
    # majority right with confidence 3/4
    {"id": 1, "answer": "#### 5", "samples": [s(0, "5"), s(1, "5"), s(2, "5.0"), s(3, "4")]},
    # a 2-2 tie between a right and a wrong answer: half credit
    {"id": 2, "answer": 7, "samples": [s(0, "7"), s(1, "8"), s(2, "8"), s(3, "7")]},
    # all wrong; one sample without an answer
    {"id": 3, "answer": "1", "samples": [s(0, "2"), s(1, "3"), s(2, None), s(3, "2")]},
    {"id": 4, "samples": [s(0, "1")]},                        # no gold: skipped
    {"id": 5, "answer": "1", "error": "context too long"},    # no samples: skipped
]


def test_summary_by_hand():
    problems, skipped = load_problems(RECORDS)
    assert skipped == {"no_gold": 1, "no_samples": 1}
    out = summarize(problems, parse_methods(["majority"]))
    row = out["methods"]["majority"]
    assert row["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    # confidences 0.75, 0.5, 2/3 with credits 1, 0.5, 0
    assert row["brier"] == pytest.approx(((0.75 - 1) ** 2 + 0 + (2 / 3) ** 2) / 3)
    assert row["ece"] == pytest.approx((0.25 + 0.0 + 2 / 3) / 3)
    assert row["tokens"] == 40
    assert out["single_sample_accuracy"] == pytest.approx((3 / 4 + 2 / 4 + 0) / 3)
    assert out["oracle"] == pytest.approx(2 / 3)
    assert out["pass_at_k"][2] == pytest.approx((1 + (1 - 1 / 6) + 0) / 3)


def test_summary_reads_recorded_aggregates():
    rec = {"answer": "5", "samples": [s(0, "5"), s(1, "4")],
           "aggregates": {"mine": {"answer": "4", "confidence": 0.9, "scores": {"4": 0.9, "5": 0.1}, "used": [1]}}}
    problems, _ = load_problems([rec])
    row = summarize(problems)["methods"]["mine"]
    assert row["accuracy"] == 0.0 and row["brier"] == pytest.approx(0.81)


def test_draw_subsets_are_seeded_uniform_subsets():
    sizes = np.array([6, 3, 6])
    a = draw_subsets(sizes, 4, 50, seed=1)
    assert a.shape == (50, 3, 4)
    assert np.array_equal(a, draw_subsets(sizes, 4, 50, seed=1))
    assert not np.array_equal(a, draw_subsets(sizes, 4, 50, seed=2))
    for rep in a:
        for p, row in enumerate(rep):
            real = row[row < sizes[p]]
            assert len(set(real)) == min(4, sizes[p]) and list(real) == sorted(real)
    counts = np.bincount(a[:, 0].ravel(), minlength=6)  # each sample equally likely (4/6 of draws)
    assert counts.min() > 20


def pool_of(rng, n, answers=3):
    return [{"i": j, "pred": str(rng.integers(0, answers)), "text": f"t{j}",
             "mean_logprob": float(-rng.gamma(2.0, 0.2)), "n_tokens": 5, "self_certainty": float(rng.normal()),
             "confidence": float(rng.uniform(1, 5))} for j in range(n)]


def test_curve_equals_aggregating_each_subset_separately():
    rng = np.random.default_rng(5)
    records = [{"answer": "1", "samples": pool_of(rng, 12)} for _ in range(6)]
    methods = parse_methods(["majority", "rpc", "pc", "borda", "deepconf:keep=0.5"])
    problems, _ = load_problems(records)
    k, repeats, seed = 5, 3, 11
    got = curve(problems, methods, [k], repeats=repeats, seed=seed)
    idx = draw_subsets(np.array([12] * 6), k, repeats, seed)
    for label, _ in methods:
        accs = []
        for r in range(repeats):
            pools = [build_pool([records[p]["samples"][j] for j in idx[r, p]]) for p in range(6)]
            aggs = aggregate_pools(pools, [(label, m) for lab, m in methods if lab == label])
            credit = []
            for a in aggs:
                sc = a[label]["scores"]
                top = [x for x, v in sc.items() if v >= max(sc.values()) - 1e-12]
                credit.append(top.count("1") / len(top))
            accs.append(np.mean(credit))
        assert got["methods"][label]["accuracy_mean"][0] == pytest.approx(np.mean(accs), abs=1e-12), label
        assert got["methods"][label]["accuracy_std"][0] == pytest.approx(np.std(accs), abs=1e-12), label


def test_curve_at_full_size_equals_the_summary():
    problems, _ = load_problems(RECORDS)
    methods = parse_methods(["majority", "pc"])
    c = curve(problems, methods, [1, 4], repeats=4, seed=0)
    summ = summarize(problems, methods)
    for label, _ in methods:
        assert c["methods"][label]["accuracy_mean"][1] == pytest.approx(summ["methods"][label]["accuracy"])
        assert c["methods"][label]["accuracy_std"][1] == 0.0
    assert c["pass_at_k"] == pytest.approx([summ["pass_at_k"][1], summ["pass_at_k"][4]])
    assert c["tokens_mean"] == pytest.approx([10.0, 40.0])


@pytest.fixture
def aggregated(tmp_path):
    path = tmp_path / "agg.jsonl"
    result = CliRunner().invoke(app, ["aggregate", "-", "-a", "majority", "--method", "rpc"],
                                input="".join(json.dumps(r) + "\n" for r in RECORDS))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == len(RECORDS) and "aggregates" not in lines[4]
    path.write_text(result.stdout)
    return path


def test_eval_cli_json_and_curve(aggregated, tmp_path):
    png = tmp_path / "curve.png"
    result = CliRunner().invoke(app, ["eval", str(aggregated), "--json", "--curve", "1,2,4", "--repeats", "3",
                                      "--plot", str(png)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip())
    assert out["methods"]["majority"]["accuracy"] == pytest.approx(0.5)
    assert out["curve"]["k"] == [1, 2, 4] and set(out["curve"]["methods"]) == {"majority", "rpc"}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_table(aggregated):
    result = CliRunner().invoke(app, ["eval", str(aggregated), "--curve", "auto"])
    assert result.exit_code == 0, result.output
    assert "majority" in result.stdout and "oracle" in result.stdout and "± " in result.stdout


def test_malformed_line_is_a_one_line_error_naming_it(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    for argv in (["aggregate", str(bad), "-a", "majority"], ["eval", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "tts_cli.app", *argv], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.startswith("tts: error: ") and f"{bad} line 2:" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_trace_error_names_the_record_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("\n" + json.dumps(RECORDS[0]) + "\n")
    # samples of 10 tokens: longer than a window of 4, so min needs the trace
    proc = subprocess.run([sys.executable, "-m", "tts_cli.app", "aggregate", str(path), "-a",
                           "deepconf:score=min,window=4"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and f"{path} line 2:" in proc.stderr and "--trace" in proc.stderr


# --- significance -----------------------------------------------------------------------------

def test_bootstrap_means_equal_a_loop_over_the_draws():
    from strategies.evaluation.bootstrap import means_of_draws

    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, (3, 17))
    idx = rng.integers(0, 17, (40, 17))
    loop = np.array([[np.mean(values[m, idx[d]]) for d in range(40)] for m in range(3)])
    assert np.allclose(means_of_draws(values, idx), loop, atol=1e-12)


def test_bootstrap_interval_matches_the_normal_approximation():
    """For the mean of many 0/1 credits, the percentile bootstrap interval is close to
    mean ± 1.96 · sd / sqrt(P), computed here directly with numpy."""
    from strategies.evaluation.bootstrap import draw_means, interval

    rng = np.random.default_rng(4)
    credit = (rng.uniform(size=2000) < 0.3).astype(float)
    lo, hi = interval(draw_means(credit[None, :], 20000, seed=0))[0]
    half = 1.959964 * credit.std() / np.sqrt(credit.size)
    assert lo == pytest.approx(credit.mean() - half, abs=0.002)
    assert hi == pytest.approx(credit.mean() + half, abs=0.002)
    # seeded: the same draws again, other draws with another seed
    assert np.array_equal(draw_means(credit[None, :], 500, 1), draw_means(credit[None, :], 500, 1))
    assert not np.array_equal(draw_means(credit[None, :], 500, 1), draw_means(credit[None, :], 500, 2))


def test_paired_comparison_counts_the_draws_a_method_wins():
    from strategies.evaluation.bootstrap import draw_means, paired

    P = 50
    base = np.zeros(P)
    base[:10] = 1
    better = base.copy()
    better[30] = 1  # right on one more problem, the same elsewhere
    means = draw_means(np.vstack([base, better]), 20000, seed=0)
    same = paired(means[0], means[0])
    assert (same["wins"], same["ties"]) == (0.0, 1.0)
    got = paired(means[1], means[0])
    # it wins exactly in the draws that contain problem 30 at least once: 1 - (1 - 1/P)^P of them
    assert got["wins"] == pytest.approx(1 - (1 - 1 / P) ** P, abs=0.01)
    assert got["wins"] + got["ties"] == pytest.approx(1.0)
    assert got["diff_ci95"][0] >= 0


def test_summary_and_curve_report_intervals_over_problems():
    rng = np.random.default_rng(6)
    records = [{"answer": "1", "samples": pool_of(rng, 8)} for _ in range(30)]
    problems, _ = load_problems(records)
    methods = parse_methods(["majority", "pc"])
    summ = summarize(problems, methods, bootstrap=4000, seed=3)
    assert summ["bootstrap"] == {"draws": 4000, "seed": 3, "level": 0.95, "baseline": "majority"}
    for label in ("majority", "pc"):
        lo, hi = summ["methods"][label]["ci95"]
        assert lo <= summ["methods"][label]["accuracy"] <= hi
    assert "vs_majority" not in summ["methods"]["majority"] and "wins" in summ["methods"]["pc"]["vs_majority"]
    # at K = N every subset is the pool: the per-problem credit, and so the interval, is the table's
    c = curve(problems, methods, [2, 8], repeats=3, seed=3, bootstrap=4000)
    for label in ("majority", "pc"):
        assert [c["methods"][label]["ci95_low"][1], c["methods"][label]["ci95_high"][1]] == \
            pytest.approx(summ["methods"][label]["ci95"], abs=1e-12)
    # without majority among the methods, the comparison still runs against it
    alone = summarize(problems, parse_methods(["pc"]), bootstrap=4000, seed=3)
    assert alone["methods"]["pc"]["vs_majority"] == summ["methods"]["pc"]["vs_majority"]


def test_eval_table_says_what_the_plus_minus_is(aggregated):
    result = CliRunner().invoke(app, ["eval", str(aggregated), "--curve", "1,4", "--bootstrap", "500"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "95% CI" in out and "> majority" in out
    assert "not uncertainty over problems" in out and "95% bootstrap interval over the 3 problems" in out
    plain = CliRunner().invoke(app, ["eval", str(aggregated), "--bootstrap", "0", "--json"])
    assert "ci95" not in plain.stdout and "bootstrap" not in json.loads(plain.stdout)


def test_zero_width_interval_is_explained_with_the_exact_binomial_bound():
    from scipy.stats import beta

    from strategies.evaluation.report import summary_table

    records = [{"answer": "1", "samples": [s(0, "2"), s(1, "3")]} for _ in range(12)]
    problems, _ = load_problems(records)
    table = summary_table(summarize(problems, parse_methods(["majority"]), bootstrap=200))
    assert "[0.0000, 0.0000]" in table
    assert f"[0, {beta.ppf(0.975, 1, 12):.4f}]" in table  # Clopper-Pearson for 0 of 12


def test_tokens_are_the_mean_over_problems_of_each_problems_total():
    # unequal totals per problem: 40, 107 and 2 tokens
    totals = [(10, 30), (100, 7), (1, 1)]
    records = [{"answer": "1", "samples": [s(0, "1", n_tokens=a), s(1, "2", n_tokens=b)]} for a, b in totals]
    problems, _ = load_problems(records)
    want = np.mean([a + b for a, b in totals])
    summ = summarize(problems, parse_methods(["majority"]), bootstrap=0)
    assert summ["tokens"] == want and summ["methods"]["majority"]["tokens"] == want
    c = curve(problems, parse_methods(["majority"]), [1, 2], repeats=50, seed=4, bootstrap=0)
    assert c["tokens_mean"][1] == want
    idx = draw_subsets(np.array([2, 2, 2]), 1, 50, seed=4)  # the samples K = 1 drew
    picked = [[totals[p][idx[r, p, 0]] for p in range(3)] for r in range(50)]
    assert c["tokens_mean"][0] == pytest.approx(np.mean(picked), abs=1e-12)  # per problem, as the table


def _curve(labels, ks=(1, 2, 4, 8), boot=None):
    rows = {lab: {"accuracy_mean": [0.1 * j + 0.01 * i for i in range(len(ks))],
                  "accuracy_std": [0.01] * len(ks)} for j, lab in enumerate(labels)}
    c = {"k": list(ks), "methods": rows, "repeats": 3, "seed": 0, "problems": 5,
         "oracle_mean": [0.5] * len(ks), "pass_at_k": [0.5] * len(ks), "tokens_mean": [10.0] * len(ks)}
    if boot:
        c["bootstrap"] = boot
    return c


def test_curve_table_fits_the_terminal_by_splitting_the_methods():
    from strategies.evaluation.report import curve_table

    labels = ["majority", "weighted-sc", "ppl", "pc", "rpc", "self-certainty", "borda", "deepconf"]
    c = _curve(labels)
    for columns in (80, 120):
        text = curve_table(c, columns)
        assert max(len(line) for line in text.splitlines() if not line.startswith(("accuracy:", "±", "oracle:"))) <= columns
        heads = [line.split() for line in text.splitlines() if line.lstrip().startswith("K ")]
        assert sorted(x for h in heads for x in h if x in labels) == sorted(labels)   # every method, once
        assert len(heads) > 1
    assert sum(line.lstrip().startswith("K ") for line in curve_table(c).splitlines()) == 1   # no width: one table


def test_plot_styles_are_distinct_and_coinciding_curves_are_named():
    from strategies.evaluation.plot import ORACLE_COLOR, method_styles

    c = _curve(["a", "b", "c", "d", "e", "f", "g", "h", "deepconf"])
    c["methods"]["h"] = dict(c["methods"]["b"])      # h's curve equals b's
    st = method_styles(c["methods"])
    colours = [v[0] for v in st.values()]
    assert len(set(colours)) == len(colours) and ORACLE_COLOR not in colours
    assert all(col.lower() not in ("#7f7f7f", "gray", "grey") for col in colours)
    assert st["h"][1] == "h (same as b)" and st["h"][2] != st["b"][2]
    assert st["deepconf"][1] == "deepconf"

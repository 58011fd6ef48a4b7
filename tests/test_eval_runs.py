"""`tts eval A B ... --x`: common problems, costs per point against sums made here from the records,
a pruned run as one point, the K = N point against single-file `tts eval`, refusals of old records."""
import json

import numpy as np
import pytest

from tests.cli import tts


def _write(path, seed, p_right, ntok, mode, pruned=False, n=8, problems=10, drop=(), cost=True, params=1000):
    rng = np.random.default_rng(seed)
    recs = []
    for pid in range(problems):
        if pid in drop:
            continue
        samples = []
        for i in range(n):
            ok = rng.random() < p_right
            fin = "pruned" if pruned and i % 3 == 2 else "stop"
            samples.append({"i": i, "text": f"The answer is {7 if ok else int(rng.integers(1, 5))}", "finish": fin,
                            "n_tokens": int(rng.integers(ntok // 2, ntok)), "mean_logprob": -float(rng.random())})
        rec = {"id": pid, "answer": "7", "run": {"mode": mode, "n": n}, "samples": samples}
        if pruned:
            rec["run"]["prune"] = {"method": "deepprune"}
        if cost:
            rec["cost"] = {"prompt_tokens": 40 + pid, "params": params}
            if pruned:
                rec["cost"]["other"] = [{"role": "judge", "model": "j", "params": 10, "tokens": 100 + pid}]
        recs.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    agg = path.with_suffix(".agg.jsonl")
    r = tts("aggregate", path, "-a", "majority", "-a", "ppl", "-o", agg)
    assert r.code == 0, r.stderr
    return agg, recs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    a = _write(d / "a.jsonl", 0, 0.4, 100, "discrete")
    b = _write(d / "b.jsonl", 1, 0.5, 60, "soft", drop=(3,))
    c = _write(d / "c.jsonl", 2, 0.5, 60, "discrete", pruned=True, drop=(5,))
    old = _write(d / "old.jsonl", 3, 0.5, 60, "discrete", cost=False)
    return a, b, c, old


def _json(*args):
    r = tts("eval", *map(str, args), "--json", "--bootstrap", "200", "--repeats", "4")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_common_problems_and_costs_at_k_equal_sums_over_the_records(files):
    (a, ra), (b, rb), (c, rc), _ = files
    res, err = _json(a, b, c, "--x", "flops")
    common = [i for i in range(10) if i not in (3, 5)]
    assert res["problems"] == len(common)
    assert res["dropped"] == {"a.agg.jsonl (discrete)": 2, "b.agg.jsonl (soft)": 1, "c.agg.jsonl (discrete, deepprune)": 1}
    assert "a.agg.jsonl (discrete): dropped 2 problem(s) not in every run" in err
    pts = {(p["run"], p["method"], p["k"]): p for p in res["points"]}
    for recs, label in ((ra, "a.agg.jsonl (discrete)"), (rb, "b.agg.jsonl (soft)")):
        mine = [r for r in recs if r["id"] in common]
        gen = np.mean([sum(s["n_tokens"] for s in r["samples"]) for r in mine])
        flops = np.mean([2 * 1000 * (r["cost"]["prompt_tokens"] + sum(s["n_tokens"] for s in r["samples"]))
                         for r in mine])
        top = pts[(label, "majority", 8)]
        assert top["cost"] == pytest.approx(flops)
        assert top["tokens"]["generated"] == pytest.approx(gen)
        # K = 1 subsets charge the prompt whole and about an eighth of the generated tokens
        one = pts[(label, "majority", 1)]
        assert one["cost"] < top["cost"]
    # the pruned run: one point, every generated token (pruned ones too) and the judge's share
    mine = [r for r in rc if r["id"] in common]
    want = np.mean([2 * 1000 * (r["cost"]["prompt_tokens"] + sum(s["n_tokens"] for s in r["samples"]))
                    + 2 * 10 * r["cost"]["other"][0]["tokens"] for r in mine])
    (pruned,) = [p for p in res["points"] if p["run"].startswith("c.") and p["method"] == "majority"]
    assert pruned["k"] is None and pruned["cost"] == pytest.approx(want)
    assert pruned["tokens"]["judge"] == pytest.approx(np.mean([r["cost"]["other"][0]["tokens"] for r in mine]))


def test_point_at_k_n_matches_single_file_eval_on_the_common_problems(files, tmp_path):
    (a, ra), (b, _), _, _ = files
    res, _ = _json(a, b, "--x", "tokens", "--label", "A", "--label", "B")
    keep = [line for line in a.read_text().splitlines() if json.loads(line)["id"] != 3]
    sub = tmp_path / "a_common.jsonl"
    sub.write_text("\n".join(keep) + "\n")
    single, _ = _json(sub)
    for m in ("majority", "ppl"):
        (p,) = [p for p in res["points"] if p["run"] == "A" and p["method"] == m and p["k"] == 8]
        assert p["accuracy"] == pytest.approx(single["methods"][m]["accuracy"])
        assert p["cost"] == pytest.approx(single["methods"][m]["tokens"])


def test_samples_axis_and_pareto_marks(files):
    (a, _), (b, _), _, _ = files
    res, _ = _json(a, b, "--x", "samples", "--curve", "1,2,4")
    assert sorted({p["cost"] for p in res["points"]}) == [1, 2, 4]
    front = [p for p in res["points"] if p["pareto"]]
    for p in front:   # nothing beats a frontier point at no more cost
        assert not any(q["cost"] <= p["cost"] and q["accuracy"] > p["accuracy"] + 1e-12 for q in res["points"])


def test_old_records_refuse_flops_with_one_line_naming_the_field(files):
    (a, _), _, _, (old, _) = files
    r = tts("eval", a, old, "--x", "flops")
    assert r.code == 2
    assert r.stderr.strip().count("\n") == 0
    assert "has no `cost`" in r.stderr and "--x flops" in r.stderr
    assert tts("eval", a, old, "--x", "tokens", "--bootstrap", "0").code == 0


def test_label_count_must_match_and_plot_is_written(files, tmp_path):
    (a, _), (b, _), _, _ = files
    r = tts("eval", a, b, "--label", "only-one")
    assert r.code == 2 and "--label" in r.stderr
    out = tmp_path / "fig" / "cost.png"
    r = tts("eval", a, b, "--plot", out, "--bootstrap", "100", "--repeats", "2")
    assert r.code == 0, r.stderr
    assert out.stat().st_size > 10000
    assert "Pareto" in r.stdout

"""`tts compare`: on a hand-built table of right/wrong per problem, the accuracies, McNemar's exact
test (scipy's binomtest on the discordant pairs), the paired bootstrap interval (scipy's own
paired bootstrap), the disagreeing ids and the costs, all computed here from the table."""
import json

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap

from tests.cli import tts

P = 300


def table(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(P) < 0.55
    b = np.where(rng.random(P) < 0.8, a, rng.random(P) < 0.75)   # mostly agree, B better when not
    return a, b


def write(path, right, tokens, ids):
    lines = []
    for pid, ok, n in zip(ids, right, tokens):
        lines.append(json.dumps({"id": int(pid), "answer": "7", "run": {"mode": "discrete"},
                                 "samples": [{"i": 0, "text": f"The answer is {7 if ok else 3}", "finish": "stop",
                                              "n_tokens": int(n)}],
                                 "cost": {"prompt_tokens": 10, "params": 500}}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    a, b = table()
    ta, tb = np.arange(P) % 7 + 5, np.arange(P) % 5 + 20
    write(d / "a.jsonl", a, ta, range(P))
    # B lacks problem 0 and has an extra one: both leave the comparison
    write(d / "b.jsonl", np.append(b[1:], True), np.append(tb[1:], 9), list(range(1, P)) + [P + 5])
    return d / "a.jsonl", d / "b.jsonl", a[1:], b[1:], ta[1:], tb[1:]


def test_statistics_match_scipy_on_the_hand_built_table(runs):
    fa, fb, a, b, ta, tb = runs
    r = tts("compare", fa, fb, "--json", "--bootstrap", "20000")
    assert r.code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["problems"] == P - 1
    assert res["a"]["accuracy"] == pytest.approx(a.mean()) and res["b"]["accuracy"] == pytest.approx(b.mean())
    assert res["difference"] == pytest.approx(b.mean() - a.mean())
    only_b, only_a = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    assert (res["sign_test"]["b_better"], res["sign_test"]["a_better"]) == (only_b, only_a)
    assert res["sign_test"]["p_value"] == pytest.approx(binomtest(only_b, only_a + only_b, 0.5).pvalue)
    ci = bootstrap((a.astype(float), b.astype(float)), lambda x, y: np.mean(y) - np.mean(x), paired=True,
                   vectorized=False, method="percentile", n_resamples=20000, random_state=1).confidence_interval
    assert res["difference_ci95"] == pytest.approx([ci.low, ci.high], abs=0.01)
    assert [d["id"] for d in res["disagree"]] == [i + 1 for i in np.flatnonzero(a != b)]
    assert res["a"]["tokens"] == pytest.approx(ta.mean()) and res["b"]["tokens"] == pytest.approx(tb.mean())
    assert res["a"]["flops"] == pytest.approx(np.mean(2 * 500 * (10 + ta)))
    assert res["dropped"] == {"a.jsonl (discrete)": 1, "b.jsonl (discrete)": 1}


def test_table_names_the_test_and_the_disagreeing_ids(runs):
    fa, fb, a, b, *_ = runs
    r = tts("compare", fa, fb, "--label", "A", "--label", "B", "--bootstrap", "500")
    assert r.code == 0, r.stderr
    assert "McNemar" in r.stdout and "B − A" in r.stdout
    first = int(np.flatnonzero(a != b)[0]) + 1
    assert f"{first}: " in r.stdout.split("disagreements")[1]


def test_an_unknown_method_is_one_line():
    r = tts("compare", "a.jsonl", "b.jsonl", "-a", "nosuch")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "nosuch" in r.stderr

"""Honest evaluation through the real commands: samples cut off by the token limit (their share,
and `--truncated ignore`), duplicate ids, --curve sizes beyond the pool, the curve's ceiling on
the same subsets as the methods, and --plot checked before any work."""
import json
import re

import numpy as np
import pytest

from tests.cli import tts
from strategies.evaluation.core import draw_subsets


def sample(i, text, finish):
    return {"i": i, "text": text, "finish": finish, "n_tokens": 48 if finish == "length" else 20,
            "mean_logprob": -0.5 - 0.1 * i}


# Problem 1: two finished samples answer 101; three cut-off ones end mid-expression on "- 3",
# so the last-number fallback reads 3 from them, and 3 outvotes 101.
CUT = "We have 104 - 3"
RECORDS = [
    {"id": "a", "answer": "101", "samples": [
        sample(0, "104 - 3 = 101. The answer is 101.", "stop"),
        sample(1, "So the answer is 101.", "stop"),
        sample(2, CUT, "length"), sample(3, CUT, "length"), sample(4, CUT, "length")]},
    {"id": "b", "answer": "6", "samples": [
        sample(0, "The answer is 6.", "stop"), sample(1, "2 * 3 is", "length"),
        sample(2, "The answer is 5.", "stop"), sample(3, "The answer is 6.", "stop"),
        sample(4, "Hmm 6", "eos")]},
]


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


def last_number(text):
    return re.findall(r"-?\d+", text)[-1]


def test_truncated_share_in_json_and_table_footer():
    samples = [s for r in RECORDS for s in r["samples"]]
    cut = sum(s["finish"] == "length" for s in samples)
    r = tts("eval", "--json", "-a", "majority", input=jsonl(RECORDS))
    assert r.code == 0, r.stderr
    got = json.loads(r.stdout)["truncated"]
    assert got == {"samples": cut, "of": len(samples), "share": pytest.approx(cut / len(samples))}
    table = tts("eval", "-a", "majority", input=jsonl(RECORDS)).stdout
    assert f"cut off by the token limit: {cut} of {len(samples)} samples ({100 * cut / len(samples):.1f}%)" in table


def test_truncated_share_is_unknown_without_finish_fields():
    bare = [{**r, "samples": [{k: v for k, v in s.items() if k != "finish"} for s in r["samples"]]}
            for r in RECORDS]
    r = tts("eval", "--json", "-a", "majority", input=jsonl(bare))
    assert json.loads(r.stdout)["truncated"] == {"samples": 0, "of": 0, "share": None}
    assert "cut off" not in tts("eval", "-a", "majority", input=jsonl(bare)).stdout


def test_aggregate_truncated_marked_is_the_default_extract_and_ignore_are_options():
    default = tts("aggregate", "-a", "majority", input=jsonl(RECORDS)).records()
    marked = tts("aggregate", "-a", "majority", "--truncated", "marked", input=jsonl(RECORDS)).records()
    extract = tts("aggregate", "-a", "majority", "--truncated", "extract", input=jsonl(RECORDS)).records()
    ignore = tts("aggregate", "-a", "majority", "--truncated", "ignore", input=jsonl(RECORDS)).records()
    assert default == marked
    first = RECORDS[0]["samples"]
    # extract (the old default): cut-off texts answer their last number, and outvote the finished samples
    assert [s["pred"] for s in extract[0]["samples"]][2:] == [last_number(CUT)] * 3
    assert extract[0]["aggregates"]["majority"]["answer"] == last_number(CUT)
    # marked and ignore: these cut-off texts mark no answer, so they have none; the finished samples decide
    for out in (marked, ignore):
        for s, orig in zip(out[0]["samples"], first):
            assert (s["pred"] is None) == (orig["finish"] == "length")
        assert out[0]["aggregates"]["majority"]["answer"] == "101"
        assert set(out[0]["aggregates"]["majority"]["used"]) == {s["i"] for s in first if s["finish"] != "length"}
        # and `tts eval` on the output scores what aggregate chose
        r = tts("eval", "--json", input=jsonl(out))
        assert json.loads(r.stdout)["methods"]["majority"]["accuracy"] == 1.0
    r = tts("eval", "--json", input=jsonl(extract))
    assert json.loads(r.stdout)["methods"]["majority"]["accuracy"] == 0.5


# A cut-off sample votes under `marked` exactly when its text holds one of the explicit markers;
# the expected answers are written out by hand.
MARKED_CASES = [
    ("Adding them, 3 + 4 = 7. Add the number of", None),           # a stray number: no vote
    ("So the answer is 7. Then we also", "7"),
    ("The final answer is $7$. Now let us check: 8", "7"),
    ("Final Answer: 7\n\nLet me verify 5", "7"),
    ("He has 7 apples.\n#### 7\nNext 9", "7"),
    ("Thus \\boxed{7} and then 8", "7"),
    ("We get \\boxed{7", None),                                    # a box cut off is no marker
]


@pytest.mark.parametrize("text, expected", MARKED_CASES)
def test_a_cut_off_sample_votes_only_through_an_explicit_marker(text, expected):
    rec = {"id": 1, "answer": "7", "samples": [{"i": 0, "text": text, "finish": "length", "n_tokens": 9}]}
    out = tts("aggregate", "-a", "majority", input=jsonl([rec])).records()[0]
    assert out["samples"][0]["pred"] == expected
    # the same text, finished, answers as before (through the fallback where it marks nothing)
    done = {**rec, "samples": [{**rec["samples"][0], "finish": "stop"}]}
    out = tts("aggregate", "-a", "majority", input=jsonl([done])).records()[0]
    assert out["samples"][0]["pred"] is not None


def test_eval_truncated_rescores_the_recorded_methods():
    """Records aggregated the old way (`extract`): eval --truncated marked/ignore must score the
    method rows on the answers it gives, as it scores the single-sample row."""
    extract = tts("aggregate", "-a", "majority", "-a", "ppl", "--truncated", "extract",
                  input=jsonl(RECORDS)).records()
    as_recorded = json.loads(tts("eval", "--json", "--bootstrap", 0, input=jsonl(extract)).stdout)
    assert as_recorded["methods"]["majority"]["accuracy"] == 0.5
    # by hand: without the cut-off samples, problem a is 101 by 2 votes to 0 and b is 6 by 2 to 1
    for mode in ("marked", "ignore"):
        r = tts("eval", "--json", "--bootstrap", 0, "--truncated", mode, input=jsonl(extract))
        assert r.code == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["methods"]["majority"]["accuracy"] == 1.0
        assert set(got["methods"]) == {"majority", "ppl"}
        assert "re-aggregating the recorded methods" in r.stderr
    # and `extract` on records aggregated the new way reads the cut-off texts again
    marked = tts("aggregate", "-a", "majority", input=jsonl(RECORDS)).records()
    r = tts("eval", "--json", "--bootstrap", 0, "--truncated", "extract", input=jsonl(marked))
    assert json.loads(r.stdout)["methods"]["majority"]["accuracy"] == 0.5


@pytest.mark.parametrize("gold", [["7", "8"], ["7"], {"value": 7}])
def test_eval_refuses_a_gold_answer_that_is_not_one_value(gold):
    good = {"id": 1, "answer": "7", "samples": [{"i": 0, "text": "The answer is 7.", "finish": "stop"}]}
    bad = {**good, "id": 2, "answer": gold}
    r = tts("eval", "-a", "majority", input=jsonl([good, bad]))
    assert r.code == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("tts: error: <stdin> line 2: ") and "gold `answer`" in line


def test_truncated_ignore_overrides_an_existing_pred():
    rec = {"id": 1, "answer": "2", "samples": [{"i": 0, "text": "2", "pred": "2", "finish": "length"},
                                              {"i": 1, "text": "3", "pred": "3", "finish": "stop"}]}
    out = tts("aggregate", "-a", "majority", "--truncated", "ignore", input=jsonl([rec])).records()[0]
    assert [s["pred"] for s in out["samples"]] == [None, "3"]
    r = tts("eval", "--json", "-a", "majority", "--truncated", "ignore", input=jsonl([rec]))
    assert json.loads(r.stdout)["oracle"] == 0.0


def test_duplicate_ids_warn_on_stderr_only():
    twice = jsonl(RECORDS) + jsonl(RECORDS)
    r = tts("eval", "--json", "-a", "majority", input=twice)
    assert r.code == 0
    warnings = [x for x in r.stderr.splitlines() if "more than once" in x]
    assert len(warnings) == 1 and warnings[0].startswith("tts: warning: 2 record id(s)")
    assert json.loads(r.stdout)["problems"] == 2 * len(RECORDS)  # stdout is still the JSON alone
    assert "more than once" not in tts("eval", "--json", "-a", "majority", input=jsonl(RECORDS)).stderr


def test_curve_sizes_beyond_the_pool_warn():
    n = len(RECORDS[0]["samples"])
    r = tts("eval", "--json", "-a", "majority", "--curve", f"1,2,{n + 3}", "--repeats", "2", input=jsonl(RECORDS))
    assert r.code == 0
    (line,) = [x for x in r.stderr.splitlines() if "--curve" in x]
    assert f"--curve {n + 3}:" in line and f"the {n} samples" in line
    ok = tts("eval", "--json", "-a", "majority", "--curve", f"1,{n}", "--repeats", "2", input=jsonl(RECORDS))
    assert "--curve" not in ok.stderr
    short = [RECORDS[0], {**RECORDS[1], "samples": RECORDS[1]["samples"][:2]}]
    r = tts("eval", "--json", "-a", "majority", "--curve", "1,4", "--repeats", "2", input=jsonl(short))
    assert "--curve 4: larger than the pool of some problems (1 of 2" in r.stderr


def test_curve_ceiling_uses_the_methods_subsets():
    """oracle_mean: any correct sample in the very subsets the methods saw (brute force here);
    so it is >= every method at every K, and equals majority's accuracy at K = 1."""
    records = [{"id": p, "answer": str(p % 3), "samples": [
        {"i": i, "pred": str((p * 7 + i * 5) % 4), "mean_logprob": -1.0 - (i % 3), "n_tokens": 10}
        for i in range(6 + p % 3)]} for p in range(12)]
    ks, repeats, seed = [1, 2, 3, 8], 7, 3
    r = tts("eval", "--json", "-a", "majority", "-a", "ppl", "--curve", ",".join(map(str, ks)),
            "--repeats", repeats, "--seed", seed, input=jsonl(records))
    assert r.code == 0, r.stderr
    c = json.loads(r.stdout)["curve"]
    sizes = np.array([len(x["samples"]) for x in records])
    for j, k in enumerate(ks):
        idx = draw_subsets(sizes, k, repeats, seed)
        brute = np.mean([[any(records[p]["samples"][i]["pred"] == records[p]["answer"]
                              for i in idx[rep, p] if i < sizes[p]) for p in range(len(records))]
                         for rep in range(repeats)])
        assert c["oracle_mean"][j] == pytest.approx(brute)
        for m in c["methods"].values():
            assert m["accuracy_mean"][j] <= c["oracle_mean"][j] + 1e-12
    assert c["oracle_mean"][0] == pytest.approx(c["methods"]["majority"]["accuracy_mean"][0])
    table = tts("eval", "-a", "majority", "--curve", "1,2", "--repeats", "2", input=jsonl(records)).stdout
    assert "oracle" in table.splitlines()[-1] and "same subsets" in table


def test_plot_creates_missing_folders(tmp_path):
    png = tmp_path / "new" / "deeper" / "curve.png"
    r = tts("eval", "-a", "majority", "--plot", png, "--repeats", "2", input=jsonl(RECORDS))
    assert r.code == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["curve.jpgg", "curve"])
def test_plot_format_is_checked_before_any_work(tmp_path, monkeypatch, name):
    import strategies.evaluation as evaluation

    def no_work(*a, **k):
        raise AssertionError("nothing may be computed before --plot is checked")

    monkeypatch.setattr(evaluation, "load_problems", no_work)
    monkeypatch.setattr(evaluation, "curve", no_work)
    r = tts("eval", "--plot", tmp_path / name, input=jsonl(RECORDS))
    assert r.code == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"tts: error: --plot {tmp_path / name}: ") and ".png" in line and ".pdf" in line

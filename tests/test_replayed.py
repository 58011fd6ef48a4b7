"""`tts eval --replay`: a pruner's point at K equals the replay run by hand on the same K samples
(renumbered 0..K-1, in sample order), aggregated afresh, tokens counted from the cut samples."""
import json
from collections import Counter

import numpy as np
import pytest

from strategies.aggregators.api import aggregate_records, parse_methods
from strategies.evaluation.core import draw_subsets
from strategies.evaluation.replayed import parse_replay, replay_curve
from strategies.evaluation.runs import load_run
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.models import Loaded
from strategies.pruners import build
from strategies.pruners.replay import replay
from strategies.runner import GenerateOptions, generate
from verifiers import equivalent

PROMPTS = [{"id": k, "prompt": p} for k, p in enumerate(["hello there", "what is 2+2", "tell me a story",
                                                         "name a colour", "count to five"])]
SPECS = ["deepconf:warmup=2,keep=0.9,window=3", "deepprune:judge=ngram,prefix=tokens:4,k2=1"]


@pytest.fixture(scope="module")
def pool(tiny):
    model, tok = tiny
    loaded = Loaded(model=model, tokenizer=tok, name="tiny-random", source="-", sha256=None)
    recs = list(generate(PROMPTS, loaded, Discrete(DiscreteParams(1.0)),
                         GenerateOptions(n=8, max_new_tokens=16, trace=True, seed=5, batch_size=8)))
    recs = list(aggregate_records(recs, parse_methods(["majority"])))
    for r in recs:   # a gold answer some samples reach: the most common one
        preds = [s["pred"] for s in r["samples"] if s["pred"] is not None]
        r["answer"] = Counter(preds).most_common(1)[0][0] if preds else "nothing"
    return recs


def by_hand(rec, idx, settings, tok):
    sub = dict(rec, samples=[{**rec["samples"][j], "i": n} for n, j in enumerate(sorted(idx))])
    sub.pop("aggregates")
    (cut,) = replay([sub], tok, build(settings), batch_size=8)
    voters = [s for s in cut["samples"] if s["finish"] not in ("pruned", "low-confidence", "consensus")]
    (agg,) = aggregate_records([dict(cut, samples=voters)], parse_methods(["majority"]))
    scores = agg["aggregates"]["majority"]["scores"]
    top = max(scores.values(), default=0)
    winners = [a for a, v in scores.items() if v >= top - 1e-9]
    credit = sum(equivalent(a, rec["answer"]) for a in winners) / len(winners) if winners else 0.0
    return credit, sum(s["n_tokens"] for s in cut["samples"])


@pytest.mark.parametrize("spec", SPECS)
def test_replayed_point_at_k_equals_the_replay_by_hand(pool, tiny, spec):
    settings = parse_replay(spec)
    run = load_run(pool, "t")
    run.methods = parse_methods(["majority"])
    k, repeats = 5, 3
    c = replay_curve(run, settings, [k], tiny[1], repeats=repeats, seed=4, bootstrap=0)
    sizes = np.array([len(r["samples"]) for r in pool])
    idx = draw_subsets(sizes, k, repeats, 4)
    credit = np.zeros((repeats, len(pool)))
    tokens = np.zeros((repeats, len(pool)))
    for r in range(repeats):
        for p, rec in enumerate(pool):
            credit[r, p], tokens[r, p] = by_hand(rec, idx[r, p], settings, tiny[1])
    full = np.mean([[sum(pool[p]["samples"][j]["n_tokens"] for j in idx[r, p]) for p in range(len(pool))]
                    for r in range(repeats)])
    assert tokens.mean() < full   # the pruner stopped something, so the check means something
    assert c["tokens_mean"][0] == pytest.approx(tokens.mean())
    assert c["methods"]["majority"]["accuracy_mean"][0] == pytest.approx(credit.mean(axis=1).mean())
    assert c["methods"]["majority"]["accuracy_std"][0] == pytest.approx(credit.mean(axis=1).std())


def test_bad_replay_specs_are_value_errors_naming_the_spec():
    for spec, msg in [("deepconf:keep=2", "keep"), ("nosuch:", "unknown pruning method"),
                      ("deepconf:colour=red", "unknown option .colour."), ("deepconf:keep", "KEY=VALUE")]:
        with pytest.raises(ValueError, match=msg):
            parse_replay(spec)


def test_cli_replay_adds_a_curve_beside_the_run(pool, tmp_path):
    from tests.cli import tts

    f = tmp_path / "t.agg.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in pool))
    r = tts("eval", f, "--replay", SPECS[0], "--json", "--bootstrap", "100", "--repeats", "2", "--curve", "2,8")
    assert r.code == 0, r.stderr
    res = json.loads(r.stdout)
    labels = {p["run"] for p in res["points"]}
    assert labels == {"t.agg.jsonl (discrete)", f"t.agg.jsonl (discrete) + {SPECS[0]}"}
    bad = tts("eval", f, "--replay", "deepconf:keep=2")
    assert bad.code == 2 and "keep" in bad.stderr

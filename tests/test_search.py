"""Beam search, DVTS and particle filtering on a tiny random model with a scripted scorer, checked
against brute-force re-rankings, lineage, and scipy's chi-square test."""
import json

import numpy as np
import pytest
from scipy import special, stats

from strategies.control import DISCARD
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.search import SearchParams, method
from strategies.search.particles import resample, weights

# the tiny model's random bytes decode to text full of U+FFFD: steps of a few tokens each
SEP = "\ufffd"
PROMPTS = [{"id": "p", "prompt": "Hi"}, {"id": "q", "prompt": "What is two plus two?"}]


def reward(step: str) -> float:
    """A deterministic scripted step reward in [0, 1) with few ties (no real PRM here)."""
    return (sum(ord(c) * (k + 1) for k, c in enumerate(step)) % 1009) / 1009


class Scripted:
    def __init__(self):
        self.calls = []

    def score(self, prompt_text, steps):
        self.calls.append((prompt_text, [list(s) for s in steps]))
        return [[reward(s) for s in sol] for sol in steps]


def our_steps(text):
    parts = text.split(SEP)
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


@pytest.fixture(scope="module")
def loaded():
    from strategies.models import load

    return load("tiny-random")


def search(loaded, name, n=8, m=2, seed=0, max_steps=6, watch=None, **kw):
    from strategies.runner import GenerateOptions, generate

    params = SearchParams(n=n, beam_width=m, max_steps=max_steps, step_sep=SEP, seed=seed, **kw)
    ctl = method(name)(Scripted(), params)
    if watch is not None:
        decide = ctl.decide

        def spy(req, paused, finished, just_finished):
            before = {id(r): (list(r.ids), ctl.text(r), r.state["search"].get("subtree")) for r in req.rows}
            acts = decide(req, paused, finished, just_finished)
            watch.append((req.key, [r for r in req.rows], before, list(paused), list(just_finished), acts))
            return acts

        ctl.decide = spy
    opts = GenerateOptions(n=n, max_new_tokens=40, seed=seed, batch_size=16)
    ctl.decoded = Decoded()
    return ctl, list(generate(PROMPTS, loaded, Discrete(DiscreteParams(1.0)), opts, controller=ctl,
                              progress=ctl.decoded))


class Decoded:
    """The engine's progress hook: every decode step reports its rows."""
    tokens = 0

    def update(self, k):
        self.tokens += k

    def sample_done(self):
        pass


def test_beam_search_keeps_the_top_n_over_m_by_the_reduced_reward(loaded):
    watch = []
    n, m = 8, 2
    ctl, records = search(loaded, "beam", n=n, m=m, watch=watch, reduce="min")
    expanding = [w for w in watch if w[3] and len(w[1]) - len(w[3]) < n]  # rows paused, fewer than N done
    assert len(expanding) >= 4
    for key, rows, before, paused, _, acts in expanding:
        act = {id(r): a for r, a in acts}
        # brute force: each paused beam's value is the min of its steps' scripted rewards
        value = {id(r): min(reward(s) for s in our_steps(before[id(r)][1])) for r in paused}
        order = sorted(range(len(paused)), key=lambda j: (-value[id(paused[j])], j))
        top = {id(paused[j]) for j in order[: n // m]}
        assert {id(r) for r in paused if act.get(id(r), 1) != DISCARD} == top
        kept = [act[id(r)] for r in paused if id(r) in top]
        assert sum(kept) == n and (len(top) < n // m or kept == [m] * (n // m))
    # the last decision (nothing paused): the N completed beams with the best reduced reward stay
    finals = [w for w in watch if not w[3]]
    assert len(finals) == len(PROMPTS)
    for key, rows, before, _, _, acts in finals:
        act = {id(r): a for r, a in acts}
        value = [min(reward(s) for s in our_steps(before[id(r)][1])) for r in rows]
        order = sorted(range(len(rows)), key=lambda j: (-value[j], j))
        assert {id(rows[j]) for j in order[:n]} == {id(r) for r in rows if act.get(id(r), 1) != DISCARD}
    for rec in records:
        s = rec["samples"]
        assert 1 <= len(s) <= n and all(x["finish"] in ("stop", "length") for x in s)
        for x in s:
            assert x["step_rewards"] == pytest.approx([reward(t) for t in our_steps(x["text"])])
        st = rec["search"]
        assert st["steps"] >= 1 and st["forks"] > 0 and st["scorer_calls"] >= st["steps"]
    # every decoded token is counted once, discarded beams' included
    assert sum(rec["search"]["tokens_generated"] for rec in records) == ctl.decoded.tokens


def test_dvts_subtrees_stay_independent(loaded):
    watch = []
    n, m = 8, 4
    _, records = search(loaded, "dvts", n=n, m=m, watch=watch)
    last_best = {}   # (key, subtree) -> ids of the beam it kept at its previous step
    for key, rows, before, paused, just, acts in watch:
        act = {id(r): a for r, a in acts}
        trees = {}
        for r in paused + just:
            trees.setdefault(before[id(r)][2], []).append(r)
        for tree, cands in trees.items():
            # every candidate of a subtree grew from that subtree's kept beam, never another's
            if (key, tree) in last_best:
                assert all(before[id(r)][0][: len(last_best[key, tree])] == last_best[key, tree] for r in cands)
            cands.sort(key=rows.index)
            vals = [reward(our_steps(before[id(r)][1])[-1]) for r in cands]
            best = cands[int(np.argmax(vals))]   # argmax takes the first of equal values
            assert [r for r in cands if act.get(id(r), 1) != DISCARD] == [best]
            assert act.get(id(best), 1) == (m if any(best is p for p in paused) else 1)
            last_best[key, tree] = before[id(best)][0]
    for rec in records:
        assert len(rec["samples"]) <= n // m
        assert rec["run"]["search"]["subtrees"] == n // m


@pytest.mark.parametrize("how", ["multinomial", "systematic"])
def test_resampling_frequencies_match_the_weights(how):
    rewards, temp, n = [0.9, 0.5, 0.2, 0.7, 0.05], 0.7, 6
    probs = weights(rewards, temp)
    np.testing.assert_allclose(probs, special.softmax(special.logit(np.array(rewards)) / temp), rtol=1e-12)
    seeds = 3000
    counts = sum(resample(probs, n, np.random.default_rng(s), how) for s in range(seeds))
    assert counts.sum() == n * seeds
    _, p = stats.chisquare(counts, probs * n * seeds)
    assert p > 1e-3
    if how == "systematic":  # each draw gives every particle floor or ceil of n * w copies
        for s in range(50):
            c = resample(probs, n, np.random.default_rng(s), how)
            assert np.all(np.abs(c - n * probs) < 1)


def test_particle_filter_draws_with_the_softmax_of_the_rewards(loaded, monkeypatch):
    from strategies.search import particles

    drawn = []
    real = particles.resample

    def spy(probs, n, rng, how):
        counts = real(probs, n, rng, how)
        drawn.append((np.array(probs), counts))
        return counts

    monkeypatch.setattr(particles, "resample", spy)
    watch = []
    n, temp = 6, 0.5
    _, records = search(loaded, "particles", n=n, watch=watch, temperature=temp)
    assert len(watch) == len(drawn) >= 4
    for (key, rows, before, paused, just, acts), (probs, counts) in zip(watch, drawn):
        last = np.array([reward(our_steps(before[id(r)][1])[-1]) for r in rows])
        want = special.softmax(special.logit(np.clip(last, 1e-7, 1 - 1e-7)) / temp)
        np.testing.assert_allclose(probs, want, rtol=1e-9)
        act = {id(r): a for r, a in acts}
        assert [act.get(id(r), 1) for r in rows] == counts.tolist()
        assert sum(counts) == n
    for rec in records:
        assert len(rec["samples"]) == n
        assert all(x["finish"] in ("stop", "length") for x in rec["samples"])


@pytest.mark.parametrize("name", ["beam", "dvts", "particles"])
def test_same_seed_same_bytes(loaded, name):
    _, a = search(loaded, name, seed=5)
    _, b = search(loaded, name, seed=5)
    _, c = search(loaded, name, seed=6)
    dump = lambda recs: "\n".join(json.dumps(r, sort_keys=True) for r in recs)  # noqa: E731
    assert dump(a) == dump(b)
    assert dump(a) != dump(c)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="multiple of --beam-width"):
        method("beam")(Scripted(), SearchParams(n=6, beam_width=4))
    with pytest.raises(ValueError, match="--resample"):
        method("particles")(Scripted(), SearchParams(n=6, resample="stratified"))
    with pytest.raises(ValueError, match="unknown search method"):
        method("mcts")

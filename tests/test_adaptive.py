"""Adaptive sample budgets: the Beta and ESC stopping rules against independent computations, the
waves they imply on hand-built pools (replayed), and online decisions equal to the replay's."""
from math import comb

import pytest

from strategies.pruners.adaptive import Adaptive, AdaptiveSettings, beta_posterior
from strategies.pruners.replay import replay
from strategies.tiny import byte_tokenizer


def binomial_posterior(a: int, b: int) -> float:
    # P(p > 1/2) for p ~ Beta(a+1, b+1) equals P(Binomial(a+b+1, 1/2) <= a) for integer counts
    n = a + b + 1
    return sum(comb(n, j) for j in range(a + 1)) / 2 ** n


@pytest.mark.parametrize("a,b", [(1, 0), (3, 0), (4, 1), (5, 2), (7, 1), (10, 6), (2, 2)])
def test_beta_posterior_is_the_binomial_tail(a, b):
    assert beta_posterior(a, b) == pytest.approx(binomial_posterior(a, b), abs=1e-12)


def _pool(answers, tok):
    """A stored record whose i-th sample says 'The answer is <answers[i]>.' (None: no answer)."""
    samples = []
    for i, a in enumerate(answers):
        text = "I am not sure." if a is None else f"The answer is {a}."
        ids = tok(text, add_special_tokens=False)["input_ids"]
        trace = {"ids": ids, **{k: [0.0] * len(ids) for k in ("logprob", "entropy", "self_certainty", "confidence")}}
        samples.append({"i": i, "text": text, "finish": "stop", "n_tokens": len(ids), "trace": trace})
    return {"id": 0, "samples": samples}


def _answer(text, finish):
    from verifiers import extract_answer

    return extract_answer(text, "auto")


def _expected_beta(answers, wave, threshold):
    """Brute force: after each whole wave, count every answer so far; stop at the first wave whose
    leader/runner-up posterior exceeds the threshold."""
    for end in range(wave, len(answers) + wave, wave):
        seen = [a for a in answers[:end] if a is not None]
        counts = sorted((seen.count(x) for x in set(seen)), reverse=True) + [0, 0]
        if counts[0] and binomial_posterior(counts[0], counts[1]) > threshold:
            return min(end, len(answers))
    return len(answers)


@pytest.mark.parametrize("answers,wave,threshold", [
    (["5"] * 16, 4, 0.9),                         # unanimous: 4 of 4 gives 0.969 > 0.9
    (["5"] * 16, 4, 0.95),                        # 0.969 > 0.95 too
    (["5", "6", "5", "6"] * 4, 4, 0.95),          # a tie never decides
    (["5", "6", "5", "5", None, "5", "5", "5", "5", "7", "5", "5"], 4, 0.95),
    (["5", "6", "5", "5", None, "5", "5", "5", "5", "7", "5", "5"], 3, 0.8),
])
def test_beta_rule_stops_after_the_wave_the_brute_force_names(answers, wave, threshold):
    tok = byte_tokenizer()
    ctl = Adaptive(AdaptiveSettings("beta", threshold, wave), _answer)
    out = next(replay([_pool(answers, tok)], tok, ctl, batch_size=3))
    kept = _expected_beta(answers, wave, threshold)
    assert [s["i"] for s in out["samples"]] == list(range(kept))
    assert out.get("skipped", 0) == len(answers) - kept
    assert out["prune"]["tokens_saved"] == sum(len(s["trace"]["ids"]) for s in _pool(answers, tok)["samples"][kept:])


@pytest.mark.parametrize("answers,w", [
    (["5", "6", "5", "5", "5", "5", "7", "7"], 2),      # (5,6) then (5,5): stops after 4
    (["5", "5", None, "5", "5", "5", "6", "6", "6"], 3),  # a window without an answer never agrees
    (["1", "2", "3", "4", "1", "2"], 2),                # never unanimous: all six run
])
def test_esc_stops_at_the_first_unanimous_window(answers, w):
    tok = byte_tokenizer()
    # brute force: the first window of w consecutive samples (from 0, w, 2w, ...) that all agree
    first = next((end for end in range(w, len(answers) + 1, w)
                  if None not in answers[end - w:end] and len(set(answers[end - w:end])) == 1), len(answers))
    ctl = Adaptive(AdaptiveSettings("esc", 1.0, w), _answer)
    out = next(replay([_pool(answers, tok)], tok, ctl, batch_size=4))
    assert len(out["samples"]) == first and out.get("skipped", 0) == len(answers) - first
    assert out["prune"]["decided"] is (first < len(answers) or out["prune"].get("agree", False))


def test_an_undecided_prompt_reports_every_wave_even_when_rows_finish_together():
    # equal-length traces in one wide batch: a wave's rows all finish in the same step
    tok = byte_tokenizer()
    answers = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    pool = _pool(answers, tok)
    for s in pool["samples"]:   # pad every text to one length, so all finish together
        s["trace"] = {k: (v + v[:1] * 40)[:40] for k, v in s["trace"].items()}
    ctl = Adaptive(AdaptiveSettings("beta", 0.95, 4), _answer)
    out = next(replay([pool], tok, ctl, batch_size=64))
    assert out["prune"]["waves"] == 3 and out["prune"]["decided"] is False and "skipped" not in out


def test_settings_parse_and_refuse():
    assert AdaptiveSettings.parse("beta:0.9") == AdaptiveSettings("beta", 0.9, 8)
    assert AdaptiveSettings.parse("beta", wave=4) == AdaptiveSettings("beta", 0.95, 4)
    assert AdaptiveSettings.parse("esc:5") == AdaptiveSettings("esc", 1.0, 5)
    for bad in ("beta:1.5", "esc:1", "esc:x", "vote:3"):
        with pytest.raises(ValueError, match="adaptive rule"):
            AdaptiveSettings.parse(bad)


def test_online_decisions_equal_the_replay_on_a_tiny_model():
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.models import load
    from strategies.runner import GenerateOptions, generate

    loaded = load("tiny-random", dtype="float32")   # see test_cli_generate_prune_and_replay

    def parity(text, finish):  # a scripted answer: the text length's parity (both runs see the same text)
        return str(len(text) % 2)

    settings = AdaptiveSettings("beta", 0.6, 2)
    prompts = [{"id": k, "prompt": f"question {k}"} for k in range(4)]
    opts = GenerateOptions(n=8, max_new_tokens=6, seed=1, batch_size=5, trace=True)
    online = list(generate(prompts, loaded, Discrete(DiscreteParams(1.0)), opts, controller=Adaptive(settings, parity)))
    full = list(generate(prompts, loaded, Discrete(DiscreteParams(1.0)), opts))
    replayed = list(replay(full, loaded.tokenizer, Adaptive(settings, parity), batch_size=5))
    assert any(r.get("skipped") for r in online), "the test needs a prompt that stops early"
    for a, b in zip(online, replayed):
        assert [s["i"] for s in a["samples"]] == [s["i"] for s in b["samples"]]
        assert [s["text"] for s in a["samples"]] == [s["text"] for s in b["samples"]]
        assert a.get("skipped") == b.get("skipped")
        assert {k: a["prune"][k] for k in ("waves", "decided")} == {k: b["prune"][k] for k in ("waves", "decided")}


def test_cli_adaptive_online_equals_tts_prune_replay(tmp_path):
    from tests.cli import tts

    inp = tmp_path / "p.jsonl"
    inp.write_text("".join(f'{{"id": {k}, "prompt": "q{k}"}}\n' for k in range(3)))
    common = ("--model", "tiny-random", "-n", "6", "--max-new-tokens", "5", "--seed", "3", "--trace", "--quiet",
              "--dtype", "float32")   # online and replayed runs batch rows differently: float32 only
    online = tts("generate", inp, *common, "--adaptive", "esc:2")
    assert online.code == 0, online.stderr
    full = tmp_path / "full.jsonl"
    assert tts("generate", inp, *common, "-o", full).code == 0
    replayed = tts("prune", full, "--method", "adaptive", "--rule", "esc:2")
    assert replayed.code == 0, replayed.stderr
    for a, b in zip(online.records(), replayed.records()):
        assert a["run"]["prune"] == {"method": "adaptive", "rule": "esc", "wave": 2}
        assert [s["text"] for s in a["samples"]] == [s["text"] for s in b["samples"]]
        assert a.get("skipped") == b.get("skipped")
        assert {k: a["prune"][k] for k in ("waves", "decided")} == {k: b["prune"][k] for k in ("waves", "decided")}
    # one pruner at a time, and its options only with it
    r = tts("generate", inp, *common, "--adaptive", "esc:2", "--prune", "deepconf")
    assert r.code == 2 and "--adaptive is a pruner of its own" in r.stderr
    r = tts("generate", inp, *common, "--wave", "4")
    assert r.code == 2 and "--wave applies to --prune adaptive only" in r.stderr, r.stderr

"""`tts generate --search`: its refusals (one line, exit 2, naming the option) and what a search
writes, on the tiny random model with the scripted stand-in scorer."""
import json

import pytest

from tests.cli import tts

SEP = "\ufffd"   # the tiny model's random bytes decode to text full of U+FFFD: short steps


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    p = tmp_path_factory.mktemp("search") / "in.jsonl"
    p.write_text("".join(json.dumps({"id": k, "prompt": t}) + "\n" for k, t in [("a", "Hi"), ("b", "2+2?")]))
    return p


@pytest.mark.parametrize("args, says", [
    (["--search", "beam", "--prm", "scripted:a", "--backend", "vllm"], "--search needs --backend native"),
    (["--search", "beam"], "--search needs --prm"),
    (["--beam-width", "2"], "--beam-width applies only with --search"),
    (["--search", "beam", "--prm", "some/reward-model"], "--prm some/reward-model: model 'some/reward-model' not found"),
    (["--search", "dvts", "--prm", "scripted:a", "-n", "6"], "multiple of --beam-width"),
    (["--search", "beam", "--prm", "scripted:a", "--prune", "deepconf"], "--search and --prune"),
    (["--search", "mcts", "--prm", "scripted:a"], "--search 'mcts'"),
])
def test_refusals_are_one_line(prompts, args, says):
    r = tts("generate", prompts, "-m", "tiny-random", "-q", *args)
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tts: error: ") and says in lines[0], r.stderr


@pytest.mark.parametrize("method", ["beam", "dvts", "particles"])
def test_a_search_writes_step_rewards_and_statistics(prompts, method):
    args = ["generate", prompts, "-m", "tiny-random", "-q", "-n", "4", "--max-new-tokens", "24",
            "--search", method, "--prm", "scripted:abcdefghijklmnopqrstuvwxyz", "--step-sep", SEP, "--seed", "3"]
    if method != "particles":
        args += ["--beam-width", "2"]
    r = tts(*args)
    assert r.code == 0, r.stderr
    again = tts(*args)
    assert r.stdout == again.stdout
    # the closing line counts every generated token, the dropped beams' too
    generated = sum(rec["search"]["tokens_generated"] for rec in r.records())
    assert f"tts generate: {generated} tokens generated;" in r.stderr
    for rec in r.records():
        assert rec["run"]["search"]["method"] == method and rec["run"]["search"]["step_sep"] == SEP
        st = rec["search"]
        assert st["scorer_calls"] >= 1 and st["tokens_generated"] >= max(s["n_tokens"] for s in rec["samples"])
        for s in rec["samples"]:
            steps = s["text"].split(SEP)
            if len(steps) > 1 and steps[-1] == "":
                steps.pop()
            lower = set("abcdefghijklmnopqrstuvwxyz")
            assert s["step_rewards"] == pytest.approx([sum(c in lower for c in t) / len(t) if t else 0.0 for t in steps])
            if s["step_rewards"]:   # the default reduction, last, is the reward best-of-n reads
                assert s["reward"] == s["step_rewards"][-1]


def test_a_search_scored_by_a_step_tag_prm_checkpoint(prompts, tmp_path):
    """--prm DIR: a (random, tiny) Math-Shepherd-style PRM scores the steps; each final sample's
    step_rewards equal a plain forward of that model over the prompt and the sample's steps."""
    import torch

    from tests.test_score import _save, _tokenizer

    path, model = _save(tmp_path, "prm", "LlamaForCausalLM", _tokenizer(["ки"]))
    tok = _tokenizer(["ки"])
    r = tts("generate", prompts, "-m", "tiny-random", "-q", "-n", "4", "--max-new-tokens", "12", "--seed", "1",
            "--search", "beam", "--beam-width", "2", "--prm", str(path), "--step-sep", SEP)
    assert r.code == 0, r.stderr
    tag, good, bad = (tok.convert_tokens_to_ids(t) for t in ("ки", "+", "-"))
    checked = 0
    for rec in r.records():
        assert rec["run"]["search"]["prm"] == str(path)
        for s in rec["samples"]:
            steps = s["text"].split(SEP)
            if len(steps) > 1 and steps[-1] == "":
                steps.pop()
            if not s["step_rewards"]:
                continue
            ids = tok(rec["prompt"] + " " + "\n\n".join(t + " ки" for t in steps), return_tensors="pt")["input_ids"]
            with torch.no_grad():
                logits = model(ids).logits[0]
            ref = logits[ids[0] == tag][:, [good, bad]].softmax(-1)[:, 0].tolist()
            assert s["step_rewards"] == pytest.approx(ref, abs=1e-4)
            checked += 1
    assert checked


def test_bench_search_times_beam_search_against_plain_decoding_of_the_same_rows(monkeypatch):
    from strategies import benchmark

    monkeypatch.setitem(benchmark.__dict__, "SEARCH_WORKLOAD", (1, 8, 2, 24, SEP))
    r = tts("bench", "-m", "tiny-random", "--mode", "search", "--json")
    assert r.code == 0, r.stderr
    (out,) = r.records()
    assert out["rows"] == 8 and out["beam_width"] == 2 and out["search_steps"] >= 1
    assert out["plain_tokens"] == 8 * 24                      # EOS ignored: every row runs to the limit
    assert out["search_tokens"] > 0
    assert out["ratio"] == pytest.approx(out["search_tok_s"] / out["plain_tok_s"], rel=1e-2)
    assert out["overhead"] == pytest.approx(1 - out["search_tok_s"] / out["plain_tok_s"], abs=1e-2)

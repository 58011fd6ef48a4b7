"""The embedded SmolLM2-135M end to end (slower: run with `make test`, skipped by `make test-fast`)."""
import math

import pytest
import torch

from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.generators.soft import Soft, SoftParams
from tests.cli import tts
from tests.test_engine import chat_ids, hf_greedy, teacher_forced_logits

pytestmark = pytest.mark.integration

PROMPTS = ["What is 7 times 8?", "Tom has 3 apples and buys 5 more. How many apples does he have now?",
           "Name the capital of France in one word."]


def test_real_model_greedy_equals_generate_and_signals_are_exact(real_model):
    model, tok = real_model.model, real_model.tokenizer
    eng = Engine(model, tok, Discrete(DiscreteParams(0.0)), batch_size=8, max_new_tokens=20)
    reqs = list(eng.run([Request(key=i, prompt_ids=chat_ids(tok, p), n=1) for i, p in enumerate(PROMPTS)]))
    V = len(tok)
    for req in reqs:
        row = req.rows[0]
        assert row.ids == hf_greedy(model, req.prompt_ids, 20, V)[: len(row.ids)]
        lp = torch.log_softmax(teacher_forced_logits(model, req.prompt_ids, row.ids)[:, :V], -1)
        for t, tok_id in enumerate(row.ids):
            assert row.logprob[t] == pytest.approx(lp[t, tok_id].item(), abs=1e-4)
            assert row.self_certainty[t] == pytest.approx(-math.log(V) - lp[t].mean().item(), abs=1e-4)


def test_real_model_shared_prompt_attention_is_exact(real_model):
    """8 samples per prompt: rows read their prompt's cache through prefix-shared attention
    (9 query heads over 3 key/value heads); every sampled token's log-probability must still be
    the teacher-forced one."""
    from tests.test_engine import count_shared_steps

    model, tok = real_model.model, real_model.tokenizer
    with pytest.MonkeyPatch.context() as mp:
        shares = count_shared_steps(mp)
        eng = Engine(model, tok, Discrete(DiscreteParams(0.8)), batch_size=16, max_new_tokens=12, seed=1)
        reqs = list(eng.run([Request(key=i, prompt_ids=chat_ids(tok, p), n=8) for i, p in enumerate(PROMPTS[:2])]))
    assert shares[0] > 0
    V = len(tok)
    for req in reqs:
        for row in req.rows:
            lp = torch.log_softmax(teacher_forced_logits(model, req.prompt_ids, row.ids)[:, :V], -1)
            got = torch.tensor(row.logprob, dtype=torch.float64)
            want = lp[torch.arange(len(row.ids)), torch.tensor(row.ids)]
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_real_model_soft_topk1_is_greedy(real_model):
    model, tok = real_model.model, real_model.tokenizer
    reqs = [Request(key=0, prompt_ids=chat_ids(tok, PROMPTS[1]), n=2)]
    greedy = list(Engine(model, tok, Discrete(DiscreteParams(0.0)), max_new_tokens=16).run(reqs))
    reqs = [Request(key=0, prompt_ids=chat_ids(tok, PROMPTS[1]), n=2)]
    soft = Soft(SoftParams(thinking=DiscreteParams(0.0), max_topk=1, cold_stop_entropy=0.0))
    soft_out = list(Engine(model, tok, soft, max_new_tokens=16).run(reqs))
    assert [r.ids for r in soft_out[0].rows] == [r.ids for r in greedy[0].rows]


def test_cli_pipeline_on_the_real_model(tmp_path):
    prompts = "".join(f'{{"id": {i}, "prompt": "{p}"}}\n' for i, p in enumerate(PROMPTS[:2]))
    r = tts("generate", "-n", "3", "--max-new-tokens", "24", "--temperature", "0.7", "--trace", "--quiet",
            input=prompts)
    assert r.code == 0, r.stderr
    recs = r.records()
    assert len(recs) == 2 and all(len(x["samples"]) == 3 for x in recs)
    assert recs[0]["run"]["model"] == "smollm2-135m" and recs[0]["run"]["model_sha256"]
    assert any(s["text"].strip() for x in recs for s in x["samples"])
    out = tmp_path / "run.jsonl"
    out.write_text(r.stdout)
    shown = tts("show", out, "--id", "1", "--sample", "2", "--color", "never")
    assert shown.code == 0 and "sample 2" in shown.stdout and "\x1b[" not in shown.stdout

"""Repetition / presence / frequency penalties and --top-logprobs against independent computations:
numpy re-derivations from the sequences, and teacher-forced passes of the model."""
import numpy as np
import orjson
import pytest
import torch

from strategies.control import Controller
from strategies.generators.discrete import DiscreteParams
from strategies.penalties import Penalties
from strategies.sampler import apply_penalties
from tests.cli import tts
from tests.test_engine import PROMPTS, chat_ids, run, teacher_forced_logits


def penalised(z, prompt, out, rep, pres, freq):
    """vLLM's definitions, one token at a time in float64."""
    z = np.array(z, dtype=np.float64)
    counts = {}
    for t in out:
        counts[t] = counts.get(t, 0) + 1
    for t in set(prompt) | set(out):
        z[t] = z[t] / rep if z[t] > 0 else z[t] * rep
    for t, c in counts.items():
        z[t] -= freq * c + pres
    return z


def test_apply_penalties_matches_numpy_per_row():
    g = torch.Generator().manual_seed(0)
    B, V = 4, 30
    logits = torch.randn(B, V, generator=g) * 3
    prompts = [[1, 2, 3], [], [5, 5, 29], [0]]
    outs = [[2, 2, 7], [4], [], [0, 0, 0, 9]]
    settings = [(1.3, 0.5, 0.2), (0.8, -0.4, 1.0), (2.0, 0.0, 0.0), (1.0, 1.5, -0.3)]
    mask = torch.zeros(B, V, dtype=torch.bool)
    counts = torch.zeros(B, V)
    for b in range(B):
        mask[b, prompts[b]] = True
        for t in outs[b]:
            counts[b, t] += 1
    rep, pres, freq = (torch.tensor(c, dtype=torch.float32) for c in zip(*settings))
    got = apply_penalties(logits, mask, counts, rep, pres, freq)
    for b in range(B):
        np.testing.assert_allclose(got[b].double().numpy(),
                                   penalised(logits[b].numpy(), prompts[b], outs[b], *settings[b]), rtol=1e-5, atol=1e-5)


class StopSampleOne(Controller):
    """Stops sample 1 after 3 tokens, so the last active row moves into its slot mid-run."""

    def step(self, rows):
        return [(r, "pruned") for r in rows if r.i == 1 and len(r.ids) == 3]


def check_greedy_with_penalties(model, tok, req, row, rep, pres, freq) -> int:
    """Each greedy token is the argmax of the penalised teacher-forced logits; returns how many
    tokens the penalties changed (the raw argmax differs)."""
    vocab = len(tok)
    raw = teacher_forced_logits(model, req.prompt_ids, row.ids)[:, :vocab].numpy()
    changed = 0
    for t, tok_id in enumerate(row.ids):
        z = penalised(raw[t], req.prompt_ids, row.ids[:t], rep, pres, freq)
        assert z[tok_id] >= z.max() - 1e-4, (t, tok_id, int(z.argmax()))
        changed += int(raw[t].argmax() != tok_id)
    return changed


def test_engine_greedy_with_penalties_against_teacher_forcing(tiny):
    model, tok = tiny
    rep, pres, freq = 1.5, 0.4, 0.3
    # 4 prompts x 2 samples over 3 slots, sample 1 stopped early: rows refill and move slots
    _, reqs = run(model, tok, DiscreteParams(temperature=0.0), n=2, batch_size=3, max_new=16,
                  penalties=Penalties(rep, pres, freq), controller=StopSampleOne())
    changed = 0
    for req in reqs:
        for row in req.rows:
            changed += check_greedy_with_penalties(model, tok, req, row, rep, pres, freq)
            # the recorded logprob stays the raw distribution's
            lp = torch.log_softmax(teacher_forced_logits(model, req.prompt_ids, row.ids)[:, :len(tok)], -1)
            ref = lp.gather(1, torch.tensor(row.ids)[:, None]).squeeze(1).numpy()
            np.testing.assert_allclose(row.logprob, ref, atol=1e-4)
    assert changed > 0  # the penalties did change tokens, so this test can tell


def test_cli_penalties_recorded_and_applied(tiny):
    model, tok = tiny
    inp = "".join(orjson.dumps({"id": i, "prompt": p}).decode() + "\n" for i, p in enumerate(PROMPTS[:2]))
    args = ["generate", "--model", "tiny-random", "--device", "cpu", "--max-new-tokens", "16", "--quiet", "--temperature", "0",
            "--trace", "--repetition-penalty", "1.3", "--presence-penalty", "0.5", "--frequency-penalty", "0.2"]
    r = tts(*args, input=inp)
    assert r.code == 0, r.stderr
    changed = 0
    for rec, text in zip(r.records(), PROMPTS):
        run_ = rec["run"]
        assert (run_["repetition_penalty"], run_["presence_penalty"], run_["frequency_penalty"]) == (1.3, 0.5, 0.2)
        s = rec["samples"][0]

        class Req:
            prompt_ids = chat_ids(tok, text)

        class Row:
            ids = s["trace"]["ids"]

        changed += check_greedy_with_penalties(model, tok, Req, Row, 1.3, 0.5, 0.2)
    assert changed > 0
    plain = tts("generate", "--model", "tiny-random", "--max-new-tokens", "4", "--quiet", input=inp).records()
    assert not any(k.endswith("_penalty") for k in plain[0]["run"])  # off: not recorded
    bad = tts("generate", "--model", "tiny-random", "--repetition-penalty", "0", input=inp)
    assert bad.code == 2 and "--repetition-penalty 0: must be > 0" in bad.stderr


def test_cli_top_logprobs_against_teacher_forcing(tiny):
    model, tok = tiny
    K = 5
    r = tts("generate", "--model", "tiny-random", "--device", "cpu", "--max-new-tokens", "10", "--quiet", "-n", "2", "--seed", "3",
            "--top-logprobs", K, "--dtype", "float32", input=orjson.dumps({"prompt": PROMPTS[1]}).decode() + "\n")
    assert r.code == 0, r.stderr
    (rec,) = r.records()
    assert rec["run"]["top_logprobs"] == K
    prompt = chat_ids(tok, PROMPTS[1])
    for s in rec["samples"]:
        top = s["trace"]["top_logprobs"]  # --top-logprobs implies --trace
        ids = s["trace"]["ids"]
        assert len(top["ids"]) == len(top["logprob"]) == len(ids)
        lp = torch.log_softmax(teacher_forced_logits(model, prompt, ids)[:, :len(tok)], -1)
        ref_v, ref_i = lp.topk(K, dim=-1)
        for t in range(len(ids)):
            np.testing.assert_allclose(top["logprob"][t], ref_v[t].numpy(), atol=2e-4)
            # ids agree except where two candidates tie to float precision
            for a, b, v in zip(top["ids"][t], ref_i[t].tolist(), ref_v[t].tolist()):
                assert a == b or abs(lp[t, a].item() - v) < 1e-4
            assert top["logprob"][t] == sorted(top["logprob"][t], reverse=True)
    assert tts("generate", "--model", "tiny-random", "--top-logprobs", "21", input="{}\n").code == 2

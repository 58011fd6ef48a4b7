"""Soft Thinking against independent computations and hand-built models."""
import numpy as np
import pytest
import torch

from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.generators.soft import Soft, SoftParams, perturb
from strategies.tiny import tiny_model
from tests.test_engine import PROMPTS, chat_ids

NEVER = "\x00never\x00"  # a think-end string the tiny model will not produce


def run(model, tok, generator, n=1, batch_size=64, max_new=20, seed=0, prompts=PROMPTS, keys=None):
    eng = Engine(model, tok, generator, batch_size=batch_size, max_new_tokens=max_new, seed=seed)
    keys = keys or list(range(len(prompts)))
    return eng, list(eng.run([Request(key=k, prompt_ids=chat_ids(tok, p), n=n) for k, p in zip(keys, prompts)]))


def ids_of(reqs):
    return [[r.ids for r in q.rows] for q in reqs]


def test_topk1_without_noise_is_greedy(tiny):
    model, tok = tiny
    greedy = DiscreteParams(temperature=0.0)
    _, d = run(model, tok, Discrete(greedy))
    for T in (0.0, 0.6):
        soft = Soft(SoftParams(thinking=DiscreteParams(T, 0.95, 30, 0.001), max_topk=1, think_end=NEVER,
                               cold_stop_entropy=0.0))
        _, s = run(model, tok, soft)
        assert ids_of(s) == ids_of(d)
        assert all(r.state["steps"] == len(r.ids) or r.finish == "stop" for q in s for r in q.rows)


def test_injected_embedding_is_the_weighted_mixture(tiny, monkeypatch):
    model, tok = tiny
    E = model.get_input_embeddings().weight.detach().double()
    seen = []
    from strategies import decoder as dec

    original = dec.Decoder.embed_mixture

    def spy(self, ids, w):
        x = original(self, ids, w)
        seen.append((ids.clone(), w.clone(), x.clone()))
        return x

    monkeypatch.setattr(dec.Decoder, "embed_mixture", spy)
    soft = Soft(SoftParams(thinking=DiscreteParams(1.0, 1.0, 0, 0.0), max_topk=6, noise="dirichlet",
                           think_end=NEVER, cold_stop_entropy=0.0))
    _, reqs = run(model, tok, soft, n=2)
    # every recorded concept step: weights non-negative, sum to 1, top-1 id = argmax of the weights
    for q in reqs:
        for r in q.rows:
            for step, (ids, w) in enumerate(zip(r.state["topk_ids"], r.state["topk_w"])):
                assert min(w) >= 0 and sum(w) == pytest.approx(1, abs=1e-3)
                assert ids[int(np.argmax(w))] == r.ids[step]
    mixtures = 0
    for ids, w, x in seen:
        ref = (w.double()[:, :, None] * E[ids]).sum(1)
        torch.testing.assert_close(x.double(), ref, atol=1e-5, rtol=1e-5)
        mixtures += int((w > 0).sum(1).gt(1).sum())
    assert mixtures > 10  # the check really covered mixtures, not only one-hot inputs


def test_noise_functions():
    rng = np.random.default_rng(0)
    w = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    p = SoftParams(noise="gumbel", gumbel_tau=0.01)
    sharp = [perturb(w, "gumbel", rng, p) for _ in range(2000)]
    assert all(s[4] == 0 for s in sharp)  # off-support stays 0
    # tau -> 0 approaches one-hot
    peak = {tau: np.mean([perturb(w, "gumbel", rng, SoftParams(gumbel_tau=tau)).max() for _ in range(500)])
            for tau in (1.0, 0.1, 0.01)}
    assert peak[1.0] < peak[0.1] < peak[0.01] and peak[0.01] > 0.98
    assert perturb(w, "gumbel", rng, SoftParams(gumbel_tau=0.0)).max() == 1.0
    # the perturbed argmax is a true sample from w (Gumbel-max)
    freq = np.bincount([int(np.argmax(s)) for s in sharp], minlength=5) / 2000
    np.testing.assert_allclose(freq, w, atol=0.035)
    d = [perturb(w, "dirichlet", rng, SoftParams(dirichlet_alpha=4.0)) for _ in range(4000)]
    assert all(x[4] == 0 and abs(x.sum() - 1) < 1e-9 for x in d)
    np.testing.assert_allclose(np.mean(d, 0), w, atol=0.02)  # E[Dir(a w)] = w
    g = [perturb(w, "gaussian", rng, SoftParams(gaussian_sigma=0.05)) for _ in range(200)]
    assert all(x.min() >= 0 and abs(x.sum() - 1) < 1e-9 and x[4] == 0 for x in g)
    assert perturb(w, "none", rng, p) is w


def test_gumbel_samples_differ_and_plain_soft_samples_do_not(tiny):
    model, tok = tiny
    plain = Soft(SoftParams(thinking=DiscreteParams(1e-4, 0.95, 30, 0.0), think_end=NEVER, cold_stop_entropy=0.0))
    _, a = run(model, tok, plain, n=4)
    assert all(len({tuple(r.ids) for r in q.rows}) == 1 for q in a)
    noisy = Soft(SoftParams(thinking=DiscreteParams(1.0, 1.0, 0, 0.0), noise="gumbel", think_end=NEVER,
                            cold_stop_entropy=0.0))
    _, b = run(model, tok, noisy, n=4)
    assert all(len({tuple(r.ids) for r in q.rows}) > 1 for q in b)


def peaked_model(token: int, scale: float):
    """A tiny model whose lm_head makes `token` dominate with margin `scale` (entropy controlled)."""
    model, tok = tiny_model("llama", seed=1)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: the input embeddings go to zero too …
        model.model.embed_tokens.weight.normal_(0, 1)  # … so give inputs fresh random embeddings
    model.lm_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[token] = scale
    return model, tok


def test_cold_stop_fires_after_L_low_entropy_steps():
    """As the reference: the step that reaches L consecutive low-entropy steps emits the think-end
    token in place of a concept token (L - 1 concept tokens, then the think-end string)."""
    model, tok = tiny_model("llama", seed=1)
    token = tok.convert_tokens_to_ids("a")
    model, tok = peaked_model(token, 40.0)  # entropy ~ 0 every step
    L = 5
    soft = Soft(SoftParams(thinking=DiscreteParams(0.6, 0.95, 30, 0.001), answer=DiscreteParams(0.0),
                           think_end="END", cold_stop_entropy=0.01, cold_stop_steps=L))
    eng, reqs = run(model, tok, soft, n=2, max_new=12, prompts=PROMPTS[:2])
    end_ids = tok("END", add_special_tokens=False)["input_ids"]
    for q in reqs:
        for r in q.rows:
            assert r.state["ended_by"] == "cold_stop" and r.state["steps"] == L - 1
            assert r.ids[: L - 1] == [token] * (L - 1)
            assert r.ids[L - 1: L - 1 + len(end_ids)] == end_ids  # the L-th step is the think-end token
            assert r.state["phase"] == "answer" and len(r.ids) == 12  # and decoding went on
            assert eng.text_of(r).startswith("a" * (L - 1) + "END")
            # the emitted think-end tokens carry their own raw log-probabilities
            lp = teacher_forced_logprobs(model, q.prompt_ids, r.ids)
            np.testing.assert_allclose(r.logprob, lp, atol=1e-4)


def teacher_forced_logprobs(model, prompt, ids):
    with torch.no_grad():
        z = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1: len(prompt) + len(ids) - 1].double()
    return torch.log_softmax(z, -1).gather(1, torch.tensor(ids)[:, None])[:, 0].numpy()


@pytest.mark.parametrize("scale,fires", [(40.0, True), (2.0, False)])
def test_cold_stop_at_temperature_zero_watches_the_raw_entropy(scale, fires):
    """At thinking temperature 0 the tempered entropy is 0 every step; Cold Stop then watches the
    temperature-1 entropy, so a spread distribution no longer trips it."""
    model, tok = tiny_model("llama", seed=1)
    token = tok.convert_tokens_to_ids("a")
    model, tok = peaked_model(token, scale)
    soft = Soft(SoftParams(thinking=DiscreteParams(0.0), answer=DiscreteParams(0.0), think_end="END",
                           cold_stop_entropy=0.01, cold_stop_steps=3))
    _, reqs = run(model, tok, soft, n=1, max_new=10, prompts=PROMPTS[:1])
    r = reqs[0].rows[0]
    assert (r.state["ended_by"] == "cold_stop") == fires
    assert r.state["steps"] == (2 if fires else 10)


@pytest.mark.parametrize("on", ["truncated", "topk"])
def test_dirichlet_noise_against_an_independent_numpy_draw(on):
    """truncated (the references): Dirichlet(alpha p) over the whole truncated distribution, then
    its top K renormalised; topk: over the renormalised top-K weights only."""
    from strategies.engine import to_host
    from strategies.generators.base import Text
    from strategies.rows import Request, Row
    from strategies.sampler import raw_signals
    from tests.test_sampler import brute_truncate

    T, top_k, top_p, min_p, K, alpha = 0.8, 25, 0.97, 0.0, 5, 4.0
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 40, generator=g) * 2
    soft = Soft(SoftParams(thinking=DiscreteParams(temperature=T, top_p=top_p, top_k=top_k, min_p=min_p), max_topk=K,
                           noise="dirichlet", dirichlet_alpha=alpha, dirichlet_on=on, think_end=NEVER))
    soft.setup(Text(encode=lambda s: [], decode=lambda ids: "", eos_ids=frozenset()))
    req = Request(key=0, prompt_ids=[1], n=3)
    rows = [Row(req, b, np.random.default_rng(10 + b), 0, [1], [1.0]) for b in range(3)]
    for r in rows:
        soft.start(r)
    sig = raw_signals(logits, 40)
    choice = soft.choose(rows, logits, sig)
    steps = soft.decide(rows, to_host({"token": choice.tokens, **choice.extras}))
    for b, st in enumerate(steps):
        q = brute_truncate(logits[b].numpy(), T, top_k, top_p, min_p)
        order = np.argsort(-q, kind="stable")
        order = order[q[order] > 0]
        if on == "topk":
            order = order[:K]
        w = q[order] / q[order].sum()
        d = np.random.default_rng(10 + b).dirichlet(alpha * w)
        top = np.argsort(-d, kind="stable")[:K]
        top = top[d[top] > 0]
        assert st.next_ids == order[top].tolist()
        np.testing.assert_allclose(st.next_w, d[top] / d[top].sum(), atol=1e-4)
        assert st.token == st.next_ids[0]
    assert soft.run_fields()["dirichlet_on"] == on


def test_cold_stop_does_not_fire_on_high_entropy_and_budget_does():
    model, tok = tiny_model("llama", seed=1)
    token = tok.convert_tokens_to_ids("a")
    model, tok = peaked_model(token, 2.0)  # a spread distribution: entropy well above tau
    soft = Soft(SoftParams(thinking=DiscreteParams(1.0, 1.0, 0, 0.0), think_end="END", cold_stop_entropy=0.01,
                           cold_stop_steps=3, soft_budget=7))
    _, reqs = run(model, tok, soft, n=1, max_new=14, prompts=PROMPTS[:1])
    r = reqs[0].rows[0]
    assert r.state["ended_by"] == "budget" and r.state["steps"] == 7
    assert r.ids[7:10] == tok("END", add_special_tokens=False)["input_ids"]


def test_think_end_detection_needs_the_whole_string():
    model, tok = tiny_model("llama", seed=1)
    a = tok.convert_tokens_to_ids("a")
    model, tok = peaked_model(a, 40.0)  # the top-1 chain is "aaaa…"
    one = Soft(SoftParams(think_end="aaa", cold_stop_entropy=0.0, answer=DiscreteParams(0.0)))
    _, reqs = run(model, tok, one, max_new=8, prompts=PROMPTS[:1])
    r = reqs[0].rows[0]
    assert r.state["ended_by"] == "think_end" and r.state["steps"] == 3  # not at the first "a"
    two = Soft(SoftParams(think_end="ab", cold_stop_entropy=0.0, answer=DiscreteParams(0.0)))
    _, reqs = run(model, tok, two, max_new=8, prompts=PROMPTS[:1])
    assert two.sample_fields(reqs[0].rows[0], False)["soft"] == {"steps": 8, "ended_by": "length"}


def test_mixed_phase_batch_equals_rows_decoded_alone(tiny):
    model, tok = tiny
    params = SoftParams(thinking=DiscreteParams(0.8, 0.95, 30, 0.001), noise="gumbel", think_end=NEVER,
                        cold_stop_entropy=0.0, soft_budget=4, answer=DiscreteParams(0.7, 1.0, 0, 0.0))
    # budgets are reached at different steps only if rows start at different times: small batch
    _, together = run(model, tok, Soft(params), n=3, batch_size=5, max_new=16, seed=3)
    for k, prompt in enumerate(PROMPTS):
        _, alone = run(model, tok, Soft(params), n=3, batch_size=1, max_new=16, seed=3, prompts=[prompt], keys=[k])
        for r1, r2 in zip(together[k].rows, alone[0].rows):
            assert r1.ids == r2.ids
            np.testing.assert_allclose(r1.logprob, r2.logprob, rtol=1e-4, atol=1e-4)  # BLAS rounding varies with batch shape


def test_think_start_delays_thinking_until_the_text_appears():
    model, tok = tiny_model("llama", seed=1)
    a = tok.convert_tokens_to_ids("a")
    model, tok = peaked_model(a, 40.0)
    late = Soft(SoftParams(think_start="aaa", think_end=NEVER, cold_stop_entropy=0.0, answer=DiscreteParams(0.0)))
    _, reqs = run(model, tok, late, max_new=8, prompts=PROMPTS[:1])
    st = reqs[0].rows[0].state
    assert st["start"] == 3 and st["steps"] == 5  # three ordinary tokens, then concept tokens
    # already in the rendered prompt: thinking from the first generated token
    early = Soft(SoftParams(think_start="user", think_end=NEVER, cold_stop_entropy=0.0))
    _, reqs = run(model, tok, early, max_new=8, prompts=PROMPTS[:1])
    assert reqs[0].rows[0].state["start"] == 0 and reqs[0].rows[0].state["steps"] == 8

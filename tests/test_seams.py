"""The engine's seams for what builds on it: a per-prompt controller (pruners), prefill from given
input embeddings (SoftCoT), and the backend surface the runner uses."""
import pytest
import torch

from strategies.backend import Backend
from strategies.control import SKIP, START, WAIT, Controller
from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.rows import SKIPPED
from tests.test_engine import PROMPTS, chat_ids


class Scripted(Controller):
    """Stops sample 1 after 3 tokens, holds samples 2+ back until sample 0 has finished, skips sample 3."""

    def __init__(self):
        self.first_step: dict = {}   # (request key, sample) -> engine step of its first token
        self.finished_at: dict = {}
        self.steps = 0
        self.seen_text = []

    def admit(self, row):
        if row.i == 3:
            return SKIP
        if row.i >= 2 and (row.req.key, 0) not in self.finished_at:
            return WAIT
        return START

    def step(self, rows):
        self.steps += 1
        stop = []
        for r in rows:
            self.first_step.setdefault((r.req.key, r.i), self.steps)
            if r.i == 1 and len(r.ids) == 3:
                self.seen_text.append(self.text(r))
                stop.append((r, "pruned"))
        return stop

    def finished(self, row):
        self.finished_at[(row.req.key, row.i)] = self.steps


def test_controller_stops_holds_back_and_skips(tiny):
    model, tok = tiny
    ctl = Scripted()
    eng = Engine(model, tok, Discrete(DiscreteParams(temperature=1.0)), batch_size=3, max_new_tokens=12,
                 ignore_eos=True, controller=ctl)
    reqs = list(eng.run([Request(key=k, prompt_ids=chat_ids(tok, p), n=5) for k, p in enumerate(PROMPTS)]))
    for q in reqs:
        by_i = {r.i: r for r in q.rows}
        assert by_i[1].finish == "pruned" and len(by_i[1].ids) == 3
        assert by_i[3].finish == SKIPPED and by_i[3].ids == [] and not by_i[3].started
        for i in (0, 2, 4):
            assert by_i[i].finish == "length" and len(by_i[i].ids) == 12
        for i in (2, 4):  # held back until sample 0 had finished
            assert ctl.first_step[(q.key, i)] > ctl.finished_at[(q.key, 0)]
    # stopped rows stop costing decode work: every decoded row-step is a recorded token
    assert eng.tokens_generated == sum(len(r.ids) for q in reqs for r in q.rows)
    # freed slots are refilled at once: with 3 slots and work waiting, no step runs short-handed
    # except at the very end; 4 prompts x (12*3 + 3) tokens over 3 slots
    assert eng.steps <= -(-eng.tokens_generated // 3) + 12
    assert ctl.seen_text and all(isinstance(t, str) for t in ctl.seen_text)


def test_a_controller_that_never_lets_rows_start_is_an_error(tiny):
    model, tok = tiny

    class Never(Controller):
        def admit(self, row):
            return WAIT

    eng = Engine(model, tok, Discrete(DiscreteParams(0.0)), batch_size=2, max_new_tokens=4, controller=Never())
    with pytest.raises(RuntimeError, match="holds back"):
        list(eng.run([Request(key=0, prompt_ids=chat_ids(tok, "x"), n=2)]))


def test_runner_omits_skipped_samples_and_counts_them(tiny):
    from strategies.runner import GenerateOptions, generate
    from strategies.models import Loaded

    model, tok = tiny
    loaded = Loaded(model=model, tokenizer=tok, name="tiny", source="-", sha256=None)

    class SkipOdd(Controller):
        def admit(self, row):
            return SKIP if row.i % 2 else START

    recs = list(generate([{"id": "a", "prompt": "hello"}], loaded, Discrete(DiscreteParams(0.0)),
                         GenerateOptions(n=5, max_new_tokens=6), controller=SkipOdd()))
    assert [s["i"] for s in recs[0]["samples"]] == [0, 2, 4]
    assert recs[0]["skipped"] == 2


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_prefill_with_injected_embeddings_equals_transformers_inputs_embeds(arch):
    """Vectors injected at given prompt positions: the first decoded logits equal transformers'
    forward over the same input embeddings, and positions not injected keep their tokens."""
    from strategies.tiny import tiny_model

    model, tok = tiny_model(arch, seed=5)
    ids = chat_ids(tok, "Two plus two is what number?")
    E = model.get_input_embeddings().weight.detach()
    g = torch.Generator().manual_seed(0)
    at = torch.tensor([3, 4, 5, len(ids) - 3])
    vectors = torch.randn(len(at), E.shape[1], generator=g) * E.norm(dim=1).mean() / E.shape[1] ** 0.5
    embeds = E[torch.tensor(ids)].clone()
    embeds[at] = vectors
    with torch.no_grad():
        ref = model(inputs_embeds=embeds[None]).logits[0, -1].double()
        plain = model(torch.tensor([ids])).logits[0, -1].double()
    eng = Engine(model, tok, Discrete(DiscreteParams(0.0)), batch_size=2, max_new_tokens=1)
    got = {}

    def spy(active):
        logits, sig = Engine.forward(eng, active)
        got.setdefault("logits", logits[0].double().clone())
        return logits, sig

    eng.forward = spy
    list(eng.run([Request(key=0, prompt_ids=ids, n=1, inject=(at, vectors))]))
    V = len(tok)
    torch.testing.assert_close(got["logits"], ref[:V], atol=1e-4, rtol=1e-4)
    assert (got["logits"] - plain[:V]).abs().max() > 1e-2  # the injection really changed the input


def test_the_engine_is_a_backend(tiny):
    model, tok = tiny
    eng = Engine(model, tok, Discrete(), batch_size=2)
    assert isinstance(eng, Backend)
    caps = eng.capabilities()
    assert set(caps.modes) >= {"discrete", "soft"} and caps.stop_rows and caps.inject
    assert set(caps.signals.values()) == {"exact"}


def test_default_batch_size_is_64_on_cpu_and_fits_memory_on_cuda(tiny, monkeypatch):
    import torch as t

    from strategies.runner import default_batch_size

    model, _ = tiny
    assert default_batch_size(model) == 64

    class FakeCuda:  # what the CUDA branch reads: a device, a config and a dtype
        device = t.device("cuda")
        config = model.config
        dtype = t.bfloat16

    cfg = model.config
    per_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 2 * (256 + 512)
    monkeypatch.setattr(t.cuda, "mem_get_info", lambda device=None: (10 * 256 * per_row, 0))
    assert default_batch_size(FakeCuda()) == 256
    monkeypatch.setattr(t.cuda, "mem_get_info", lambda device=None: (100 * per_row, 0))
    assert default_batch_size(FakeCuda()) == 80   # 0.8 * 100 rows, a multiple of 16
    monkeypatch.setattr(t.cuda, "mem_get_info", lambda device=None: (per_row, 0))
    assert default_batch_size(FakeCuda()) == 16

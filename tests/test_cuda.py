"""The CUDA path (graph-captured decode steps) against eager decoding and transformers.

Skipped without a GPU: CI has none. Run on a GPU machine with `pytest tests/test_cuda.py`.
"""
import pytest
import torch

from strategies.cuda_graphs import graph_rows, graph_span
from strategies.decoder import Decoder
from strategies.generators.discrete import DiscreteParams
from tests.test_engine import PROMPTS, chat_ids, check_signals_by_teacher_forcing
from tests.test_engine import run as engine_run
from strategies.tiny import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_model(arch, seed=3, dtype=torch.float32):
    model, tok = tiny_model(arch, seed=seed)
    return model.to("cuda", dtype), tok


def run(model, tok, params, n=2, batch_size=5, max_new=40, **kw):
    return engine_run(model, tok, params, n=n, batch_size=batch_size, max_new=max_new, **kw)


def test_graph_rows_pad_up_and_never_past_the_slots():
    assert [graph_rows(n, 64) for n in (1, 3, 5, 17, 33, 64)] == [1, 4, 8, 24, 48, 64]
    assert graph_rows(3, 3) == 3
    assert graph_rows(65, 96) == 96


def test_graph_spans_pad_little():
    for span in range(1, 5000):
        g = graph_span(span, 1 << 30)
        assert g >= span and (g - span < 128 or (g - span) / span <= 0.125)
    assert graph_span(300, 290) == 300  # never past the model's positions, never below the need


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_graph_decode_equals_eager_decode(arch):
    """The same cache contents and inputs through a replayed graph and through eager ops."""
    model, tok = cuda_model(arch)
    torch.manual_seed(0)
    graphed, eager = Decoder(model, 8), Decoder(model, 8, cuda_graphs=False)
    assert graphed.cuda_graphs and not eager.cuda_graphs
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    for dec in (graphed, eager):
        for slot, ids in enumerate(prompts + prompts[:1]):
            dec.cache.write_prefix(slot, dec.prefill(torch.tensor(ids, device="cuda")))
    pos = torch.tensor([len(ids) for ids in prompts + prompts[:1]], device="cuda")
    for step in range(264):  # crosses span buckets and a cache growth (capacity 256 first)
        # row counts change, so several graphs replay in turn; padding rows (of the 5-row step)
        # land in slots 5..7, which are free as the engine guarantees
        B = (5, 4, 2, 1)[(step // 7) % 4]
        x = torch.randn(B, model.config.hidden_size, device="cuda")
        a = graphed.decode(x, pos[:B])
        b = eager.decode(x, pos[:B])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        pos[:B] += 1
    assert len(graphed.graphs) >= 3
    for kg, ke in zip(graphed.cache.k, eager.cache.k):  # the written keys too, slot by slot over the used span
        n = int(pos.max())
        torch.testing.assert_close(kg[:5, :, :n], ke[:5, :, :n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_triton_kernels_equal_torch_in_the_decoder(arch):
    """The default CUDA kernels (Triton: attention over each row's own positions, one-kernel
    norms) inside the captured graphs against SDPA over the masked span and the modules' norms,
    eager: same logits to 1e-4 in float32."""
    model, tok = cuda_model(arch)
    torch.manual_seed(1)
    fast, plain = Decoder(model, 6), Decoder(model, 6, cuda_graphs=False, kernels="torch")
    assert (fast.kernels, fast.attention) == ("triton", "triton") and plain.attention == "sdpa"
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    for dec in (fast, plain):
        for slot, ids in enumerate(prompts):
            dec.cache.write_prefix(slot, dec.prefill(torch.tensor(ids, device="cuda")))
    pos = torch.tensor([len(ids) for ids in prompts], device="cuda")
    for step in range(150):
        x = torch.randn(len(prompts), model.config.hidden_size, device="cuda")
        torch.testing.assert_close(fast.decode(x, pos), plain.decode(x, pos), rtol=1e-4, atol=1e-4)
        pos += 1


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_greedy_on_cuda_equals_transformers_generate(arch):
    model, tok = cuda_model(arch)
    pad_rows = list(range(len(tok), model.config.vocab_size))
    _, reqs = run(model, tok, DiscreteParams(temperature=0.0), n=2, batch_size=3, max_new=24)
    for req, text in zip(reqs, PROMPTS):
        ids = torch.tensor([chat_ids(tok, text)], device="cuda")
        ref = model.generate(ids, max_new_tokens=24, do_sample=False, attention_mask=torch.ones_like(ids),
                             suppress_tokens=pad_rows)[0, ids.shape[1]:].tolist()
        for row in req.rows:
            assert row.ids == ref[: len(row.ids)]
            assert len(row.ids) == len(ref) or row.ids[-1] == tok.eos_token_id


def test_signals_on_cuda_equal_a_teacher_forced_pass():
    model, tok = cuda_model("llama")
    _, reqs = run(model, tok, DiscreteParams(temperature=1.0, top_k=20, top_p=0.9), n=3, batch_size=4)
    assert check_signals_by_teacher_forcing(model, len(tok), reqs) > 100


def samples(reqs):
    return [(r.ids, [round(v, 4) for v in r.logprob]) for q in reqs for r in q.rows]


def test_cuda_runs_reproduce_and_match_eager_sampling():
    model, tok = cuda_model("llama")
    params = DiscreteParams(temperature=0.8, top_p=0.95)
    _, first = run(model, tok, params, n=3, batch_size=6, seed=11)
    _, again = run(model, tok, params, n=3, batch_size=6, seed=11)
    _, eager = run(model, tok, params, n=3, batch_size=6, seed=11, cuda_graphs=False)
    assert samples(first) == samples(again)
    assert [ids for ids, _ in samples(first)] == [ids for ids, _ in samples(eager)]


def test_bfloat16_graphs_decode_like_eager_bfloat16():
    """The default CUDA dtype: graph replay and eager ops run the same kernels on the same shapes
    apart from padding, so greedy chains agree."""
    model, tok = cuda_model("llama", dtype=torch.bfloat16)
    params = DiscreteParams(temperature=0.0)
    _, graphed = run(model, tok, params, n=1, batch_size=8, max_new=16)
    _, eager = run(model, tok, params, n=1, batch_size=8, max_new=16, cuda_graphs=False)
    agree = [a.ids[:8] == b.ids[:8] for qa, qb in zip(graphed, eager) for a, b in zip(qa.rows, qb.rows)]
    assert sum(agree) >= len(agree) - 1


def test_compiled_graphs_decode_like_eager():
    """torch.compile'd layers inside the captured graphs: same greedy chains and signals to 1e-4."""
    model, tok = cuda_model("qwen3")
    params = DiscreteParams(temperature=0.0)
    _, compiled = run(model, tok, params, n=2, batch_size=5, compile=True)
    _, eager = run(model, tok, params, n=2, batch_size=5, cuda_graphs=False)
    for qa, qb in zip(compiled, eager):
        for a, b in zip(qa.rows, qb.rows):
            assert a.ids == b.ids
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)

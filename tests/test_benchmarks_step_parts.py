"""benchmarks/step_parts.py times the decode step part by part: its step must be the decoder's."""
import pytest
import torch

from benchmarks.step_parts import Parts, measure, step
from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete
from strategies.models import load


@pytest.mark.parametrize("kernels", ["auto", "torch"])   # auto: the compiled kernels where they build
def test_the_timed_step_computes_the_decoders_step(kernels):
    loaded = load("tiny-random", "cpu", "float32")
    eng = Engine(loaded.model, loaded.tokenizer, Discrete(), batch_size=6, max_new_tokens=20, kernels=kernels)
    active = []
    for row in eng.admit(Request(key=0, prompt_ids=list(range(3, 40)), n=6)):
        eng.place(row, active)
    for b, r in enumerate(active):
        r.pos += b   # rows at different positions
    positions = torch.tensor([r.pos for r in active])
    x = torch.randn(6, loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    shared = eng._shared(active)
    assert shared is not None
    parts = Parts()
    got = step(eng.decoder, x, positions, shared, parts)
    want = eng.decoder.decode(x, positions, shared)
    assert torch.equal(got, want)
    assert {"q/k/v product", "LM head"} <= set(parts.seconds)
    assert any(name.startswith("attention, own tokens") for name in parts.seconds)


def test_measure_reports_every_part_and_the_step():
    out = measure("tiny-random", "float32", rows=4, prompt=12, own=3, steps=2)
    assert out["step_ms"] > 0 and out["parts_ms"]["signals"] >= 0
    assert sum(out["parts_ms"].values()) <= out["step_ms"] * 1.5

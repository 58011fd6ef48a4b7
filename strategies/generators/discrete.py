"""Ordinary sampling: temperature, top-k, top-p, min-p; temperature 0 is greedy."""
from __future__ import annotations

from dataclasses import asdict

import torch

from strategies.generators.base import Generator
from strategies.generators.params import DiscreteParams  # noqa: F401 (re-exported)
from strategies.rows import Choice
from strategies.sampler import SamplingParams, sample


def draw_tokens(rows, logits: torch.Tensor, params: SamplingParams, sig=None) -> torch.Tensor:
    """One token per row, on the device; each row spends exactly one uniform of its own stream.
    `sig`: the raw signals, reused when they were computed from these very logits."""
    u = torch.tensor([r.rng.random() for r in rows], dtype=torch.float64, device=logits.device)
    shifted = sig.shifted if sig is not None and sig.logits is logits else None
    return sample(logits, params, u, shifted)


class Discrete(Generator):
    name = "discrete"

    def __init__(self, params: DiscreteParams | None = None):
        self.params = params or DiscreteParams()
        self._stacked: dict[tuple, SamplingParams] = {}   # every row has the same settings

    def choose(self, rows, logits, sig):
        key = (len(rows), logits.device)
        if key not in self._stacked:
            self._stacked[key] = SamplingParams.stack([self.params] * len(rows), logits.device)
        return Choice(draw_tokens(rows, logits, self._stacked[key], sig))

    def run_fields(self) -> dict:
        return asdict(self.params)

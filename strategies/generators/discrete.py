"""Ordinary sampling: temperature, top-k, top-p, min-p; temperature 0 is greedy."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from strategies.engine import Step
from strategies.generators.base import Policy
from strategies.sampler import SamplingParams, sample


@dataclass
class DiscreteParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    def row(self) -> tuple[float, int, float, float]:
        return (self.temperature, self.top_k, self.top_p, self.min_p)


def draw_tokens(rows, logits: torch.Tensor, params: list[DiscreteParams] | SamplingParams) -> list[int]:
    """One token per row; each row spends exactly one uniform of its own stream per call."""
    sp = params if isinstance(params, SamplingParams) else SamplingParams.stack([p.row() for p in params],
                                                                                logits.device)
    u = torch.tensor([r.rng.random() for r in rows], dtype=torch.float64, device=logits.device)
    return sample(logits, sp, u).tolist()


class Discrete(Policy):
    name = "discrete"

    def __init__(self, params: DiscreteParams | None = None):
        self.params = params or DiscreteParams()
        self._stacked: dict[tuple, SamplingParams] = {}   # every row has the same settings

    def choose(self, rows, logits, sig):
        key = (len(rows), logits.device)
        if key not in self._stacked:
            self._stacked[key] = SamplingParams.stack([self.params.row()] * len(rows), logits.device)
        toks = draw_tokens(rows, logits, self._stacked[key])
        return [Step(t, [t], [1.0]) for t in toks]

    def run_fields(self) -> dict:
        return asdict(self.params)

"""Self-certainty Borda voting: rank samples by self-certainty; rank r casts (N - r + 1)^p votes.

p = 0 is majority voting; large p approaches Best-of-N. Only samples with an answer are ranked
(N counts them), and equal self-certainties share the better rank.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, Option, class_sum


def competition_rank(values: np.ndarray) -> np.ndarray:
    """Per row, 1 + the number of strictly larger values ("1 2 2 4" ranking), by one sort."""
    order = np.argsort(-values, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    pos = np.arange(values.shape[1])
    starts = np.ones(values.shape, dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # where each run of ties starts
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, first + 1, axis=1)
    return rank


@register
class Borda(Aggregator):
    name = "borda"
    summary = "self-certainty rank vote, (N - rank + 1)^p votes"
    needs = ("self_certainty",)
    options = {"p": Option(0.5, float, "rank exponent: 0 = majority, large = Best-of-N")}

    def validate(self):
        if self.opts["p"] < 0:
            raise ValueError("borda: option p must be >= 0")

    def score(self, b: Batch):
        sc = b.field("self_certainty")
        mask = b.votes & np.isfinite(sc)
        rank = competition_rank(np.where(mask, sc, -np.inf))
        n = mask.sum(axis=1, keepdims=True)
        votes = np.where(mask, np.maximum(n - rank + 1, 0).astype(float) ** self.opts["p"], 0.0)
        return class_sum(np.where(mask, b.cls, -1), votes, b.n_classes), mask

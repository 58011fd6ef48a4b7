"""Self-certainty Borda voting: rank samples by self-certainty; rank r casts (N - r + 1)^p votes.

p = 0 is majority voting; large p approaches Best-of-N. `rank=all` (the default, as the reference
implementation does it) ranks every sample, answered or not: a sample without an answer takes its
rank and casts no vote, and N counts all samples. `rank=answered` ranks only the samples with an
answer (N counts them). Equal self-certainties share the better rank.
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
    options = {
        "p": Option(0.5, float, "rank exponent: 0 = majority, large = Best-of-N"),
        "rank": Option("all", str, "all: rank every sample, answered or not (the reference); "
                       "answered: rank only samples with an answer", ("all", "answered")),
    }

    def validate(self):
        if self.opts["p"] < 0:
            raise ValueError("borda: option p must be >= 0")

    def score(self, b: Batch):
        sc = b.field("self_certainty")
        voters = b.votes & np.isfinite(sc)
        ranked = b.samples if self.opts["rank"] == "all" else voters
        # An unanswered sample without a self-certainty (a pool from another tool) still counts in
        # N but ranks below every sample that has one, so it moves no voter's rank.
        rank = competition_rank(np.where(ranked & np.isfinite(sc), sc, -np.inf))
        n = ranked.sum(axis=1, keepdims=True)
        votes = np.where(voters, np.maximum(n - rank + 1, 0).astype(float) ** self.opts["p"], 0.0)
        return class_sum(np.where(voters, b.cls, -1), votes, b.n_classes), voters

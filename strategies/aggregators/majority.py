"""Majority vote (self-consistency): the most frequent answer wins."""
from __future__ import annotations

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, class_sum


@register
class Majority(Aggregator):
    name = "majority"
    summary = "most frequent answer (self-consistency)"

    def score(self, b: Batch):
        return class_sum(b.cls, 1.0, b.n_classes), b.votes

"""Majority vote (self-consistency): the most frequent answer wins.

A sample's vote is its `votes` field: 1, or the size of the cluster it represents when DeepPrune
finished one trace per cluster (`--survivors representatives`)."""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, class_sum


@register
class Majority(Aggregator):
    name = "majority"
    summary = "most frequent answer (self-consistency)"

    def score(self, b: Batch):
        votes = b.fields.get("votes")
        weight = 1.0 if votes is None else np.nan_to_num(votes, nan=1.0)
        return class_sum(b.cls, weight, b.n_classes), b.votes

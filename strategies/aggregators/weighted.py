"""Weighted self-consistency: votes weighted by the path's probability.

`weight=normalized` uses exp(mean token logprob), `unnormalized` exp(sum); `reduce=sum` adds the
weights of an answer's samples, `mean` averages them. The self-consistency paper found
normalised-sum about equal to majority and the other variants much worse, hence the defaults.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, Option, class_sum, stabilised_exp


@register
class Weighted(Aggregator):
    name = "weighted"
    summary = "votes weighted by exp(mean or sum logprob)"
    options = {
        "weight": Option("normalized", str, "exp(mean_logprob) or exp(logprob)", ("normalized", "unnormalized")),
        "reduce": Option("sum", str, "add or average an answer's weights", ("sum", "mean")),
    }

    @property
    def needs(self):
        return ("mean_logprob",) if self.opts["weight"] == "normalized" else ("logprob",)

    def score(self, b: Batch):
        logw = b.field(self.needs[0])
        mask = b.votes & np.isfinite(logw)
        cls = np.where(mask, b.cls, -1)
        total = class_sum(cls, stabilised_exp(logw, mask), b.n_classes)
        if self.opts["reduce"] == "mean":
            count = class_sum(cls, 1.0, b.n_classes)
            total = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return total, mask

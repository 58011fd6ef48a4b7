"""Weighted Best-of-N: the answer whose samples' rewards sum highest (reward-weighted majority).

As in search-and-learn's weighted Best-of-N (Hugging Face's test-time compute recipes) and the
PRM-weighted self-consistency of OmegaPRM: each sample votes for its answer with its reward as the
weight; `reduce=mean` averages an answer's rewards instead. Rewards are weights, so they must not
be negative (a PRM's probabilities, an ORM's positive-label probability); a negative one is refused
rather than silently floored — rank-only scores such as raw ORM logits belong in `best-of-n`.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, Option, PoolError, class_sum
from strategies.aggregators.score_field import FIELD_OPTION, field_key, read_score


@register
class WeightedBestOfN(Aggregator):
    name = "weighted-best-of-n"
    summary = "answers scored by the sum of their samples' rewards"
    options = {
        "field": FIELD_OPTION,
        "reduce": Option("sum", str, "add or average an answer's rewards", ("sum", "mean")),
    }

    def reads(self) -> tuple[str, ...]:
        return (self.opts["field"],)

    def sample_fields(self, sample: dict) -> dict[str, float]:
        name = self.opts["field"]
        v = read_score(self.name, sample, name)
        if v < 0:
            which = f"sample {sample['i']}" if "i" in sample else "a sample"
            raise PoolError(f"method {self.name} weighs votes by `{name}`, which must be >= 0 ({which} has {v}); "
                            "use best-of-n for rewards of any sign")
        return {field_key(name): v}

    def score(self, b: Batch):
        r = b.fields.get(field_key(self.opts["field"]))
        if r is None:
            r = np.full(b.cls.shape, np.nan)
        mask = b.votes & np.isfinite(r)
        cls = np.where(mask, b.cls, -1)
        total = class_sum(cls, np.where(mask, r, 0.0), b.n_classes)
        if self.opts["reduce"] == "mean":
            count = class_sum(cls, 1.0, b.n_classes)
            total = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return total, mask

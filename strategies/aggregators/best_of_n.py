"""Best-of-N with an external verifier: the answer of the sample with the highest `reward`.

The reward is any per-sample number, higher = better (`field=NAME` reads another field): an ORM's
logit, a PRM's reduced step probability, a judge's grade. An answer's score is exp(its best
sample's reward - the best reward), normalised over answers: a softmax over the answers' best
rewards, which for an outcome reward model trained with a Bradley-Terry loss reads as the
probability that the winner beats the others, and keeps rewards of any sign usable. Equal best
rewards are a tie (as in the other Best-of-N methods); `used` holds each answer's best sample.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, class_max, gather, stabilised_exp
from strategies.aggregators.score_field import FIELD_OPTION, field_key, read_score


@register
class BestOfNReward(Aggregator):
    name = "best-of-n"
    summary = "answer of the sample with the highest reward (verifier Best-of-N)"
    options = {"field": FIELD_OPTION}

    def reads(self) -> tuple[str, ...]:
        return (self.opts["field"],)

    def sample_fields(self, sample: dict) -> dict[str, float]:
        return {field_key(self.opts["field"]): read_score(self.name, sample, self.opts["field"])}

    def score(self, b: Batch):
        r = b.fields.get(field_key(self.opts["field"]))
        if r is None:  # no sample of any row has an answer: nothing to score
            r = np.full(b.cls.shape, np.nan)
        mask = b.votes & np.isfinite(r)
        best = class_max(np.where(mask, b.cls, -1), np.where(mask, r, -np.inf), b.n_classes)
        used = mask & (r >= gather(best, b.cls))
        present = np.isfinite(best)
        return stabilised_exp(np.where(present, best, 0.0), present), used

"""PC (perplexity consistency): an answer scores the summed path probabilities of its samples,
each distinct text counted once."""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, class_sum, first_occurrence


def consistency_scores(b: Batch, keep: np.ndarray):
    """Sum exp(mean_logprob) over the distinct texts among the `keep` samples of each answer."""
    used = first_occurrence(b.text, keep)
    x = np.exp(np.where(used, b.field("mean_logprob"), -np.inf))
    return class_sum(np.where(used, b.cls, -1), x, b.n_classes), used


@register
class PerplexityConsistency(Aggregator):
    name = "pc"
    summary = "sum of exp(mean logprob) per answer, identical texts once"
    needs = ("mean_logprob",)

    def kept(self, b: Batch, voters: np.ndarray) -> np.ndarray:
        """The voting samples that count (RPC prunes some)."""
        return voters

    def score(self, b: Batch):
        return consistency_scores(b, self.kept(b, b.votes & np.isfinite(b.field("mean_logprob"))))

"""PPL: the answer of the sample with the lowest perplexity (highest mean token logprob)."""
from __future__ import annotations

from strategies.aggregators import register
from strategies.aggregators.base import BestOfN


@register
class Perplexity(BestOfN):
    name = "ppl"
    summary = "answer of the most probable sample (highest mean logprob)"
    signal = "mean_logprob"
    log_probability = True

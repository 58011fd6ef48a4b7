"""Self-certainty Best-of-N: the answer of the sample with the highest mean self-certainty."""
from __future__ import annotations

from strategies.aggregators import register
from strategies.aggregators.base import BestOfN


@register
class SelfCertainty(BestOfN):
    name = "self-certainty"
    summary = "answer of the most self-certain sample (Best-of-N)"
    signal = "self_certainty"

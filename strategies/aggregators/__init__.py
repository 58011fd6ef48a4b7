"""Aggregators: turn N sampled answers into one, each in its own module, all in one registry.

Adding a method is one module (a subclass of `base.Aggregator` decorated with `@register`) plus its
import line below. The library API for records lives in `strategies.aggregators.api`.
"""
from __future__ import annotations

REGISTRY: dict[str, type] = {}


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


from strategies.aggregators import (  # noqa: E402,F401  (imported for their @register)
    majority, weighted, ppl, pc, rpc, self_certainty, borda, deepconf,
)
from strategies.aggregators import best_of_n, weighted_best_of_n  # noqa: E402,F401  (external rewards)

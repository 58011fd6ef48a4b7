"""Verifier-guided search over steps, as engine controllers: beam search, DVTS and particle
filtering (docs/search.md). One module per method; `REGISTRY` names them.

A method is a `strategies.control.Controller` with a step separator: the engine pauses each row
when its newest text contains the separator, and once every live row of a prompt is paused or
finished the method scores the partial solutions with a process reward model (`base.Scorer`) and says
which rows continue, fork into several (sharing their keys/values so far) or are dropped.
"""
from __future__ import annotations

from strategies.registry import entry
from strategies.search.params import REDUCE, SearchParams
from strategies.search.scorers import scorer

# name -> "module:Class" of a SearchController, imported when picked
REGISTRY = {
    "beam": "strategies.search.beam:BeamSearch",
    "dvts": "strategies.search.dvts:DVTS",
    "particles": "strategies.search.particles:ParticleFilter",
}


def method(name: str):
    """The controller class registered as `name` (strategies/search/base.py: SearchController)."""
    return entry(REGISTRY, name, "search method", ValueError)


__all__ = ["REDUCE", "REGISTRY", "SearchParams", "method", "scorer"]

"""Generators: how a row turns a step's logits into its next input. One module each, one registry."""
from __future__ import annotations

from strategies.generators.base import Policy
from strategies.generators.discrete import Discrete

REGISTRY: dict[str, str] = {
    "discrete": "strategies.generators.discrete:Discrete",
    "soft": "strategies.generators.soft:Soft",
}


def get_policy(name: str) -> type[Policy]:
    import importlib

    if name not in REGISTRY:
        raise KeyError(f"unknown mode {name!r} (known: {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Policy", "Discrete", "REGISTRY", "get_policy"]

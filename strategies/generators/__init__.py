"""Generators: how a row turns a step's logits into its next input (`tts generate --mode NAME`).
One module each; a new generator is one file and one line here. (Nothing is imported eagerly:
the CLI reads settings from generators.params without loading torch.)"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "discrete": "strategies.generators.discrete:Discrete",
    "soft": "strategies.generators.soft:Soft",
    "softcot": "strategies.generators.softcot:SoftCoT",
}


def generator_class(name: str):
    """The Generator subclass registered as `name`."""
    if name not in REGISTRY:
        raise KeyError(f"unknown mode {name!r} (known: {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)

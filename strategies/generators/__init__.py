"""Generators: how a row turns a step's logits into its next input (`tts generate --mode NAME`).
One module each; a new generator is one file and one line here. (Nothing is imported eagerly:
the CLI reads settings from generators.params without loading torch.)"""
from __future__ import annotations

from strategies.registry import entry

REGISTRY: dict[str, str] = {
    "discrete": "strategies.generators.discrete:Discrete",
    "soft": "strategies.generators.soft:Soft",
    "softcot": "strategies.generators.softcot:SoftCoT",
}


def generator_class(name: str):
    """The Generator subclass registered as `name`."""
    return entry(REGISTRY, name, "mode")

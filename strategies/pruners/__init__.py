"""Pruners: per-prompt controllers that stop redundant or hopeless samples while they are sampled
(`tts generate --prune`), and the same decisions replayed on stored runs (`tts prune`).

One module per method, each registering a builder in METHODS; the DeepPrune judges live in
`judges/` with their own registry (JUDGES). `settings.PruneSettings` holds every option and
checks it; `build(settings, loaded)` gives the controller.
"""
from __future__ import annotations

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


from strategies.pruners import deepconf, deepprune  # noqa: E402,F401  (imported for their @register)


def build(settings, loaded=None):
    """The controller for `settings.method` (`loaded`: the generator's model, for the llm judge)."""
    settings.validate()
    return METHODS[settings.method].from_settings(settings, loaded)

"""Pruners: per-prompt controllers that stop redundant or hopeless samples while they are sampled
(`tts generate --prune`), and the same decisions replayed on stored runs (`tts prune`).

One module per method, each registering its controller class in METHODS; a class declares its
`options` (name -> Option, as the aggregators do) and checks their values in `check`. The
DeepPrune judges live in `judges/` with their own registry (JUDGES).

    from strategies.pruners import build, settings
    ctl = build(settings("deepconf", warmup=8, keep=0.1, window=64))
"""
from __future__ import annotations

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


from strategies.pruners import adaptive, deepconf, deepprune  # noqa: E402,F401  (imported for their @register)


def settings(method: str, seed: int = 0, **options):
    """The checked settings of pruner `method` (options not given take their defaults)."""
    from strategies.pruners.settings import resolve

    return resolve(method, options, seed)


def build(settings, loaded=None):
    """The controller for `settings` (from `settings()`; `loaded`: the generator's model, for the
    llm judge)."""
    return METHODS[settings.method].from_settings(settings, loaded)

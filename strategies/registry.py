"""Registries that name their entries as "module:attribute" strings, imported only when picked
(generators, backends, search methods): the command line lists them without loading torch."""
from __future__ import annotations

import importlib
from typing import Any


def entry(registry: dict, name: str, what: str, error: type[Exception] = KeyError) -> Any:
    """The object registered as `name` (a "module:attribute" string is imported, anything else is
    returned as it is); `error` naming the known ones otherwise, with `what` saying what they are."""
    if name not in registry:
        raise error(f"unknown {what} {name!r} (known: {', '.join(registry)})")
    found = registry[name]
    if isinstance(found, str):
        module, _, attr = found.partition(":")
        found = getattr(importlib.import_module(module), attr)
    return found

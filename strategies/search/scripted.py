"""A scripted stand-in for a process reward model, for plumbing and tests only: a step's reward is
the fraction of its characters that belong to a given set. It judges nothing; numbers from it are
not results (docs/search.md)."""
from __future__ import annotations


class ScriptedScorer:
    def __init__(self, chars: str):
        if not chars:
            raise ValueError("--prm scripted:CHARS needs at least one character")
        self.chars = frozenset(chars)
        self.name = f"scripted:{chars}"

    def score(self, prompt_text: str, steps: list[list[str]]) -> list[list[float]]:
        return [[sum(c in self.chars for c in s) / len(s) if s else 0.0 for s in sol] for sol in steps]

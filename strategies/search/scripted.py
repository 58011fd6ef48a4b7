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


def scorer(spec: str):
    """The scorer named by --prm: `scripted:CHARS`; a reward model is not available in this build."""
    if spec.startswith("scripted:"):
        return ScriptedScorer(spec.partition(":")[2])
    raise ValueError(f"--prm {spec}: a process reward model scorer is needed and none is available in this build "
                     "yet; --prm scripted:CHARS runs the search with a scripted stand-in (not a verifier)")

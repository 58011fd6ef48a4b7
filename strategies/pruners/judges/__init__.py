"""DeepPrune judges: given two trace prefixes, a score (higher: more likely the same answer) compared
with τ; in [0, 1] for every judge but embedding, whose cosine is in [-1, 1].

Each judge is one module with a class registered here; `score(pairs)` takes (text_a, text_b)
pairs and returns one score per pair, so a judge can batch its model calls.
"""
from __future__ import annotations

JUDGES: dict[str, type] = {}


def register(cls):
    JUDGES[cls.name] = cls
    return cls


def make_judge(settings, loaded=None):
    return JUDGES[settings.judge](settings, loaded)


from strategies.pruners.judges import ngram, embedding, llm, classifier  # noqa: E402,F401

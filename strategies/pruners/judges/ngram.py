"""Jaccard similarity of the two prefixes' word n-grams (no model)."""
from __future__ import annotations

import re

import numpy as np

from strategies.pruners.judges import register

WORD = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    if len(words) < n:  # a prefix shorter than n words is its own single gram
        return {tuple(words)} if words else set()
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@register
class NgramJudge:
    name = "ngram"

    def __init__(self, settings, loaded=None):
        self.n = settings.ngram

    def score(self, pairs):
        cache: dict[str, set] = {}

        def grams(t):
            if t not in cache:
                cache[t] = ngrams(t, self.n)
            return cache[t]

        return np.array([jaccard(grams(a), grams(b)) for a, b in pairs])

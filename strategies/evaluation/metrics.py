"""Scoring functions: tie-aware accuracy credit, calibration, pass@k."""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def tie_credit(winners: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Per row, the share of tied winners that are correct (1/|ties| each); 0 with no winner.

    winners, correct: (R,C) bool.
    """
    n = winners.sum(axis=1)
    hit = (winners & correct).sum(axis=1)
    return np.divide(hit, n, out=np.zeros(len(n), dtype=float), where=n > 0)


def ece(confidence, credit, bins: int = 10) -> float:
    """Expected calibration error: equal-width bins on [0,1], |accuracy - confidence| weighted by
    the bin's share of problems (a confidence of exactly 1 falls in the last bin)."""
    confidence = np.asarray(confidence, dtype=float)
    credit = np.asarray(credit, dtype=float)
    if confidence.size == 0:
        return float("nan")
    idx = np.clip((confidence * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, credit, bins) - np.bincount(idx, confidence, bins))
    return float(gap.sum() / confidence.size) if count.sum() else float("nan")


def brier(confidence, credit) -> float:
    """Mean squared gap between the winner's confidence and whether it was right."""
    confidence = np.asarray(confidence, dtype=float)
    credit = np.asarray(credit, dtype=float)
    return float(np.mean((confidence - credit) ** 2)) if confidence.size else float("nan")


def _log_comb(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def pass_at_k(n, c, k: int) -> np.ndarray:
    """Unbiased pass@k per problem, 1 - C(n-c, k) / C(n, k), for n samples of which c are correct.

    Problems with fewer than k samples use k = n (all of them).
    """
    n = np.asarray(n, dtype=float)
    c = np.asarray(c, dtype=float)
    k = np.minimum(float(k), n)
    fail = n - c
    # C(n-c, k) is 0 when fewer than k samples are wrong: then some correct sample is always drawn.
    with np.errstate(invalid="ignore"):
        ratio = np.exp(_log_comb(fail, k) - _log_comb(n, k))
    return np.where((fail < k) | (n == 0), (n > 0) & (c > 0), 1.0 - ratio).astype(float)

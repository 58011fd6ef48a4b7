"""Uncertainty over problems: a seeded bootstrap of per-problem scores, paired across methods.

Every method is resampled with the same draws of problems, so a comparison between two methods
sees the same problems on both sides (a paired bootstrap): what varies is which problems a
benchmark of this size happens to contain, not the methods' luck on different ones.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
# Draws are made in blocks so that memory stays near this many (draw, problem) counts.
_BLOCK_CELLS = 1 << 21


def draw_means(values: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(M, draws) means of `values` (M, P) over `draws` resamplings of its P problems with
    replacement, each draw shared by all M rows. Seeded by (seed, P)."""
    values = np.asarray(values, dtype=np.float64)
    M, P = values.shape
    rng = np.random.default_rng([seed, P, 0xB007])  # a stream apart from the curve's subsets
    out = np.empty((M, draws))
    block = max(1, _BLOCK_CELLS // max(P, 1))
    for start in range(0, draws, block):
        n = min(block, draws - start)
        idx = rng.integers(0, P, size=(n, P))
        out[:, start:start + n] = means_of_draws(values, idx)
    return out


def means_of_draws(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(M, D) means of values (M, P) over the D draws of problem indices idx (D, P)."""
    D, P = idx.shape
    counts = np.bincount((idx + P * np.arange(D)[:, None]).ravel(), minlength=D * P).reshape(D, P)
    return values @ counts.T / P


def interval(means: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """(…, 2) percentile interval of bootstrap means along the last axis (numpy's linear
    percentile)."""
    tail = (1 - level) / 2 * 100
    return np.moveaxis(np.percentile(means, [tail, 100 - tail], axis=-1), 0, -1)


def paired(means: np.ndarray, base: np.ndarray, level: float = LEVEL) -> dict:
    """A method's bootstrap means against the baseline's on the same draws: the share of draws in
    which it scores higher (`wins`), equal (`ties`), and the interval of the difference."""
    diff = means - base
    tie = np.abs(diff) <= 1e-12  # equal credit sums, up to the rounding of the matrix product
    return {"wins": float(np.mean((diff > 0) & ~tie)), "ties": float(np.mean(tie)),
            "diff_ci95": [float(v) for v in interval(diff, level)]}

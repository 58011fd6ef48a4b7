"""RPC (reasoning-pruning perplexity consistency), methods.md §3.

Fit a two-component Weibull mixture to the path probabilities x_i = exp(mean_logprob_i) of all
samples (paths without an extractable answer are paths too, as in the reference, where they form
an "[Invalid]" answer; here they still never vote); prune sample i iff its posterior membership of
the low-mean component exceeds the high one and x_i < mean(x); score answers as PC does over the
rest (identical texts once). Pruned answers stay in `scores` with 0; if every answered sample is
pruned, the answers tie.

The fit is the expensive step of a curve, so `Batch` rows are fitted together (see weibull.py),
and skipped where it cannot change the outcome: no answer at all, fewer than two paths or all x
equal (nothing lies below the mean), or, when the caller does not need `used`, a single answer
(it scores 1 whatever is pruned).
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Batch
from strategies.aggregators.pc import PerplexityConsistency
from strategies.aggregators.weibull import fit_mixture, low_component_posterior_wins

_PARALLEL_MIN_ROWS = 256  # below this, starting worker processes costs more than it saves


def _prune_rows(X: np.ndarray) -> np.ndarray:
    """(B,n) path probabilities -> (B,n) bool pruned."""
    params = fit_mixture(X)
    return low_component_posterior_wins(X, params) & (X < np.mean(X, axis=1, keepdims=True))


def _prune_parallel(X: np.ndarray, jobs: int) -> np.ndarray:
    if jobs <= 1 or X.shape[0] < _PARALLEL_MIN_ROWS:
        return _prune_rows(X)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = np.array_split(X, jobs)
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:  # no fork on this platform: stay in-process
        return _prune_rows(X)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return np.concatenate(list(pool.map(_prune_rows, chunks)))


def _needs_fit(x: np.ndarray, paths: np.ndarray, cls: np.ndarray, need_used: bool) -> np.ndarray:
    lo = np.min(np.where(paths, x, np.inf), axis=1)
    hi = np.max(np.where(paths, x, -np.inf), axis=1)
    c_hi = cls.max(axis=1)
    needs = (paths.sum(axis=1) >= 2) & (lo < hi) & (c_hi >= 0)
    if not need_used:
        c_lo = np.min(np.where(cls >= 0, cls, np.iinfo(cls.dtype).max), axis=1)
        needs &= c_lo < c_hi
    return needs


def prune(b: Batch) -> np.ndarray:
    """(R,K) bool: the samples RPC prunes (only samples with a finite mean_logprob are paths)."""
    mask = np.isfinite(b.field("mean_logprob"))
    x = np.exp(np.where(mask, b.field("mean_logprob"), -np.inf))
    pruned = np.zeros(mask.shape, dtype=bool)
    rows = np.flatnonzero(_needs_fit(x, mask, b.cls, b.need_used))
    n = mask[rows].sum(axis=1)
    for size in np.unique(n):  # rows of one size fit as one (B, size) batch, samples in order
        group = rows[n == size]
        cols = np.argsort(~mask[group], axis=1, kind="stable")[:, :size]
        X = np.take_along_axis(x[group], cols, axis=1)
        hit = _prune_parallel(X, b.jobs)
        sub = np.zeros((group.size, mask.shape[1]), dtype=bool)
        np.put_along_axis(sub, cols, hit, axis=1)
        pruned[group] = sub
    return pruned


@register
class RPC(PerplexityConsistency):
    name = "rpc"
    summary = "PC after Weibull-mixture pruning of low-probability paths"

    def kept(self, b: Batch, voters: np.ndarray) -> np.ndarray:
        return voters & ~prune(b)

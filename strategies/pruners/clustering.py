"""DeepPrune's greedy clustering of one prompt's trace prefixes, and which traces survive.

Kept free of models and engines so that it can be tested on hand-built similarity matrices.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Pairs = Sequence[tuple[int, int]]


def greedy_clusters(n: int, score: Callable[[Pairs], Sequence[float]], *, k1: int, tau: float,
                    max_clusters: int, rng: np.random.Generator) -> list[list[int]]:
    """Clusters of samples 0..n-1, built in sample order.

    Sample j is compared with up to `k1` members of each existing cluster (a seeded random choice
    when the cluster is larger); `score([(member, j), ...])` gives the judge's scores. It joins
    the cluster with the best mean score if that mean exceeds `tau` (the first such cluster on a
    tie), else opens a new cluster. Once `max_clusters` exist it joins the best cluster whatever
    its score (methods.md does not say; a trace never left unassigned keeps the survivor rules
    simple).
    """
    clusters: list[list[int]] = []
    for j in range(n):
        if not clusters:
            clusters.append([j])
            continue
        picks = [c if len(c) <= k1 else sorted(rng.choice(c, size=k1, replace=False).tolist()) for c in clusters]
        pairs = [(m, j) for c in picks for m in c]
        s = np.asarray(score(pairs), dtype=np.float64)
        means, at = [], 0
        for c in picks:
            means.append(float(s[at: at + len(c)].mean()))
            at += len(c)
        best = int(np.argmax(means))
        if means[best] > tau or len(clusters) >= max_clusters:
            clusters[best].append(j)
        else:
            clusters.append([j])
    return clusters


def survivors(clusters: list[list[int]], policy: str, k2: int = 0) -> set[int]:
    """The samples that finish.

    largest (the paper's rule): the first `k2` members (all when k2 = 0) of the largest cluster
    (the earliest of equally large ones); when every cluster is a singleton, everything (ordinary
    sampling). The paper lets the "top" k* = min(|c_max|, K2) traces of the cluster finish
    (its figure: "sample q traces"); a prompt's samples are independent draws in no meaningful
    order, so the first k2 members are such a sample, without a random choice of their own.
    representatives: the first member of every cluster (its vote counts with the cluster's size).
    """
    if policy == "representatives":
        return {c[0] for c in clusters}
    if all(len(c) == 1 for c in clusters):
        return {j for c in clusters for j in c}
    biggest = max(clusters, key=len)  # max keeps the first of equal sizes
    return set(biggest[:k2] if k2 else biggest)

"""Particle filtering with a process reward model (Puri et al., "A probabilistic inference
approach to inference-time scaling of LLMs"; its_hub's ParticleFiltering).

N particles per prompt. At every step each unfinished particle generates one step and the PRM
scores it; every particle (finished ones with their final reward) gets the weight
softmax(logit(r) / temperature) over the prompt's particles, r its reduced step rewards, and N
particles are drawn with those weights (multinomial, or systematic: one uniform offset, N evenly
spaced points). A particle drawn k times continues as k copies sharing its keys/values; one not
drawn is dropped. Resampling happens after every step, the last included; the search ends when
every particle has finished. The output is the N final particles.

Where the reference is silent or we differ: rewards are clipped to [1e-7, 1 - 1e-7] before the
logit (as its_hub does); the draws come from a generator keyed by (seed, record id, step), so the
same seed gives the same search; temperature 1 is its_hub's (its weights are the plain softmax).
"""
from __future__ import annotations


import numpy as np

from strategies.control import DISCARD
from strategies.rng import row_rng
from strategies.search.base import SearchController


def weights(rewards: list[float], temperature: float) -> np.ndarray:
    """softmax(logit(r) / temperature) over the particles."""
    r = np.clip(np.asarray(rewards, dtype=np.float64), 1e-7, 1 - 1e-7)
    z = np.log(r / (1 - r)) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def resample(probs: np.ndarray, n: int, rng: np.random.Generator, method: str) -> np.ndarray:
    """How many copies of each particle the next step has (counts summing to n)."""
    if method == "multinomial":
        return rng.multinomial(n, probs)
    if method == "systematic":
        points = (rng.random() + np.arange(n)) / n
        cdf = np.cumsum(probs)
        cdf[-1] = 1.0   # rounding must not leave a point past the last particle
        return np.bincount(np.searchsorted(cdf, points, side="right"), minlength=len(probs))
    raise ValueError(f"unknown resampling {method!r}")


class ParticleFilter(SearchController):
    name = "particles"

    def method_fields(self) -> dict:
        return {"temperature": self.params.temperature, "resample": self.params.resample}

    def start(self, req):
        req.info["search_draws"] = 0

    def decide(self, req, paused, finished, just_finished):
        alive = req.rows   # paused and finished particles, in row order
        draw = req.info["search_draws"]
        req.info["search_draws"] = draw + 1
        rng = row_rng(self.params.seed, req.key, f"resample:{draw}")
        probs = weights([self.value(r) for r in alive], self.params.temperature)
        counts = resample(probs, self.params.n, rng, self.params.resample)
        return [(r, int(c) if c else DISCARD) for r, c in zip(alive, counts)]

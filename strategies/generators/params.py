"""The generators' settings as plain dataclasses (no torch: the CLI reads its defaults from here)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class DiscreteParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0


NOISES = ("none", "gumbel", "dirichlet", "gaussian")
DIRICHLET_ON = ("truncated", "topk")
# The paper's settings: thinking, and the answer after it (the CLI's defaults read these).
THINKING = DiscreteParams(temperature=0.6, top_p=0.95, top_k=30, min_p=0.001)
ANSWER = DiscreteParams(temperature=0.6, top_p=0.95, top_k=30, min_p=0.0)


@dataclass
class SoftParams:
    thinking: DiscreteParams = field(default_factory=lambda: replace(THINKING))
    answer: DiscreteParams = field(default_factory=lambda: replace(ANSWER))
    max_topk: int = 10
    noise: str = "none"
    gumbel_tau: float = 0.5
    dirichlet_alpha: float = 4.0
    # truncated: Dirichlet(alpha p) over the whole truncated distribution, then its top K (both
    # reference implementations); topk: over the top-K weights only (this project's first version)
    dirichlet_on: str = "truncated"
    gaussian_sigma: float = 0.05
    think_start: str | None = None
    think_end: str = "</think>"
    cold_stop_entropy: float = 0.01
    cold_stop_steps: int = 256
    soft_budget: int = 0  # 0 = none

    def __post_init__(self):
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}")
        if self.dirichlet_on not in DIRICHLET_ON:
            raise ValueError(f"dirichlet_on must be one of {DIRICHLET_ON}")


PERTURBS = ("none", "init-tokens", "gaussian")


@dataclass
class SoftCoTParams:
    """SoftCoT / SoftCoT++ (--mode softcot): decoding is `sampling` after an injected prefill."""

    sampling: DiscreteParams = field(default_factory=DiscreteParams)   # the paper's T = 1, top-p = 1
    thoughts: int = 4            # placeholders (n = 4 at evaluation in the paper)
    perturb: str = "none"        # none | init-tokens | gaussian
    perturb_sigma: float = 0.05  # gaussian: std of the noise added to each projected coordinate
    per_chain: int = 1           # samples per chain (SoftCoT++ with self-consistency)

    def __post_init__(self):
        if self.perturb not in PERTURBS:
            raise ValueError(f"perturb must be one of {PERTURBS}")
        if self.thoughts < 1:
            raise ValueError("--thoughts must be at least 1")
        if self.per_chain < 1:
            raise ValueError("--per-chain must be at least 1")

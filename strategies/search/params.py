"""A search's settings and the reductions of per-step rewards, as plain Python (no torch): the
command line reads its defaults and checks options from here without loading the engine."""
from __future__ import annotations

import math
from dataclasses import dataclass

# How a partial solution's per-step rewards rank it (search-and-learn's aggregation strategies)
REDUCE = {
    "last": lambda s: s[-1],
    "min": min,
    "prod": math.prod,
    "mean": lambda s: sum(s) / len(s),
}


@dataclass
class SearchParams:
    n: int                        # N: rows per prompt (the rows decoded at every step)
    beam_width: int = 4           # M: beam search keeps N/M beams, DVTS runs N/M subtrees
    max_steps: int = 40           # the last step is not cut at the separator
    step_sep: str = "\n\n"
    reduce: str = "last"          # REDUCE: how per-step rewards rank a partial solution
    temperature: float = 1.0      # particle filtering: softmax(logit(reward) / temperature)
    resample: str = "multinomial"  # particle filtering: multinomial | systematic
    seed: int = 0                 # particle filtering's resampling draws

    def check(self, method: str) -> None:
        if self.n < 1:
            raise ValueError(f"-n must be at least 1, got {self.n}")
        if self.max_steps < 1:
            raise ValueError(f"--max-steps must be at least 1, got {self.max_steps}")
        if not self.step_sep:
            raise ValueError("--step-sep must not be empty")
        if self.reduce not in REDUCE:
            raise ValueError(f"--reduce {self.reduce!r}: expected one of {', '.join(REDUCE)}")
        if method in ("beam", "dvts") and (self.beam_width < 1 or self.n % self.beam_width):
            raise ValueError(f"--search {method} needs -n a multiple of --beam-width "
                             f"(got -n {self.n}, --beam-width {self.beam_width})")
        if method == "particles":
            if self.resample not in ("multinomial", "systematic"):
                raise ValueError(f"--resample {self.resample!r}: expected multinomial or systematic")
            if not self.temperature > 0:
                raise ValueError(f"--search-temperature must be positive, got {self.temperature}")

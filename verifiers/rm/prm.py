"""What the two process-reward formats share: steps in, one score per step out."""
from __future__ import annotations

from typing import Sequence

from verifiers.rm.base import RewardInputError, RewardModel


class ProcessRewardModel(RewardModel):
    kind = "prm"

    def encode_item(self, prompt, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the rendered (prompt, steps), and the position scored for each step."""
        raise NotImplementedError

    def score_steps(self, items: Sequence[tuple], batch_size: int = 8, on_tokens=None) -> list[list[float]]:
        """Per-step scores in [0, 1] for each (prompt, steps); prompt is a string or chat messages.

        Independent of any file format, so a step-level search can call it on partial solutions."""
        encoded = []
        for j, (prompt, steps) in enumerate(items):
            if not steps:
                raise RewardInputError("no steps to score", j)
            try:
                encoded.append(self.encode_item(prompt, list(steps)))
            except RewardInputError as e:
                e.item = j
                raise
        return self.score_encoded(encoded, batch_size, on_tokens)

    def score_encoded(self, encoded: list[tuple[list[int], list[int]]], batch_size: int = 8,
                      on_tokens=None) -> list[list[float]]:
        raise NotImplementedError

"""The engine's state for repetition / presence / frequency penalties (sampler.apply_penalties).

Kept on the device, one row per cache slot, and moved with the slots, so a step costs one small
host-to-device copy of the emitted tokens and no sync. The engine builds this only when a penalty
is set: the default path allocates and does nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.sampler import apply_penalties


@dataclass(frozen=True)
class Penalties:
    repetition: float = 1.0   # 1 = off
    presence: float = 0.0     # 0 = off
    frequency: float = 0.0    # 0 = off

    @property
    def active(self) -> bool:
        return self.repetition != 1.0 or self.presence != 0.0 or self.frequency != 0.0

    def run_fields(self) -> dict:
        """Only the penalties that are set (records of runs without them keep their old bytes)."""
        out = {}
        if self.repetition != 1.0:
            out["repetition_penalty"] = self.repetition
        if self.presence != 0.0:
            out["presence_penalty"] = self.presence
        if self.frequency != 0.0:
            out["frequency_penalty"] = self.frequency
        return out


class PenaltyState:
    """Per slot: which tokens the prompt holds, and how often each token was emitted."""

    def __init__(self, penalties: Penalties, slots: int, vocab_size: int, device):
        self.p = penalties
        self.device = device
        self.prompt = torch.zeros(slots, vocab_size, dtype=torch.bool, device=device)
        self.counts = torch.zeros(slots, vocab_size, dtype=torch.float32, device=device)
        self._settings: dict[int, tuple] = {}

    def place(self, slot: int, prompt_ids: list[int]) -> None:
        self.prompt[slot] = False
        self.counts[slot] = 0
        if prompt_ids:
            self.prompt[slot, torch.tensor(prompt_ids, device=self.device)] = True

    def move(self, src: int, dst: int) -> None:
        self.prompt[dst] = self.prompt[src]
        self.counts[dst] = self.counts[src]

    def add(self, tokens: list[int]) -> None:
        """Count each row's emitted token (rows are slots 0..B-1, in order)."""
        B = len(tokens)
        idx = torch.tensor(tokens, device=self.device)
        self.counts[torch.arange(B, device=self.device), idx] += 1

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        B = logits.shape[0]
        if B not in self._settings:
            self._settings[B] = tuple(torch.full((B,), v, dtype=torch.float32, device=self.device)
                                      for v in (self.p.repetition, self.p.presence, self.p.frequency))
        return apply_penalties(logits, self.prompt[:B], self.counts[:B], *self._settings[B])

"""The interface between the shared engine and a generator."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from strategies.engine import Engine, Row, Step
    from strategies.sampler import Signals


class Policy:
    """A generator's decisions; the engine calls these for every row it decodes."""

    name = "base"

    def bind(self, engine: "Engine") -> None:
        """Called once by the engine (gives access to the tokenizer and decoder)."""
        self.engine = engine

    def start(self, row: "Row") -> None:
        """A new row: set up its state."""

    def choose(self, rows: list["Row"], logits: "torch.Tensor", sig: "Signals") -> list["Step"]:
        """One Step per row from this step's logits [B, V]."""
        raise NotImplementedError

    def after(self, row: "Row") -> None:
        """The row's token for this step is recorded (row.ids[-1]); update state, force tokens."""

    def sample_fields(self, row: "Row", trace: bool) -> dict:
        """Extra per-sample output fields."""
        return {}

    def run_fields(self) -> dict:
        """Every parameter that shaped the output, for the record's `run` object."""
        return {}

"""The interface between the shared engine and a generator (what `tts generate --mode` picks).

Per step the engine calls `choose` with the step's logits (device work only, no host sync), reads
the chosen tokens, the signals and the generator's `extras` back in one transfer, then calls
`decide` (host side) and, once each row's token is recorded, `after`. A generator never touches
the engine: what it needs of the tokenizer arrives through `setup`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from strategies.rows import Change, Choice, Request, Row, Step

if TYPE_CHECKING:
    import torch

    from strategies.sampler import Signals


@dataclass(frozen=True)
class Text:
    """The tokenizer as a generator sees it."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    eos_ids: frozenset[int]


class Generator:
    name = "base"

    def setup(self, text: Text) -> None:
        self.text = text

    def requests(self, req: "Request", obj: dict, tokenizer, opts) -> list["Request"]:
        """The requests one input record becomes (default: its own). A generator may split a record
        (SoftCoT: one request per chain, with sample_offset set); the runner joins their rows back
        into one output record. Raise ValueError for a record it cannot serve."""
        return [req]

    def start(self, row: Row) -> None:
        """A new row: set up its state."""

    def choose(self, rows: list[Row], logits: "torch.Tensor", sig: "Signals") -> Choice:
        """The next token of each row, on the device, from this step's logits [B, V]."""
        raise NotImplementedError

    def decide(self, rows: list[Row], host: dict[str, np.ndarray]) -> list[Step]:
        """Host side: one Step per row. `host` holds `token` (the chosen or forced token per row),
        `logprob`, the signals and this generator's extras, as numpy arrays. The default: the
        token itself is the next input."""
        return [Step(t, [t], [1.0]) for t in host["token"].astype(np.int64).tolist()]

    def after(self, row: Row) -> Change | None:
        """The row's token for this step is recorded (row.ids[-1]); update state, maybe change its next input."""
        return None

    def sample_fields(self, row: Row, trace: bool) -> dict:
        """Extra per-sample output fields."""
        return {}

    def run_fields(self) -> dict:
        """Every parameter that shaped the output, for the record's `run` object."""
        return {}

    def cost_other(self, req: Request) -> list[dict]:
        """Models other than the decoding one that read tokens for this request (`cost.other`
        entries: role, model, params, tokens)."""
        return []

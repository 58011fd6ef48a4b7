"""The seam for per-prompt controllers (pruners): watch rows grow, stop them, hold samples back.

The engine calls a controller at two points, and only when one is set (otherwise it costs nothing):

- `admit(row)` before placing a waiting row: `START` places it, `WAIT` leaves it waiting (other
  rows take the slot meanwhile), `SKIP` never starts it (its `finish` becomes "skipped" and the
  output leaves it out).
- `step(rows)` after every decode step with the rows that just grew (token ids, per-token
  signals, `text(row)` decoded on demand): it returns the rows to stop, each with a reason, which
  becomes the row's `finish`. A stopped row frees its slot at once, exactly as a finished one.
"""
from __future__ import annotations

from typing import Callable, Iterable

from strategies.rows import Request, Row

START, WAIT, SKIP = "start", "wait", "skip"


class Controller:
    """Default behaviour: start everything, stop nothing. Subclass and override."""

    def bind(self, text: Callable[[Row], str]) -> None:
        """`text(row)` decodes a row's tokens so far (given by the engine)."""
        self.text = text

    def begin(self, req: Request) -> None:
        """A request was admitted (its rows exist, none placed yet)."""

    def admit(self, row: Row) -> str:
        return START

    def step(self, rows: Iterable[Row]) -> list[tuple[Row, str]]:
        return []

    def finished(self, row: Row) -> None:
        """A row finished (any reason, including a stop this controller asked for)."""

    def run_fields(self) -> dict:
        """The controller's settings, for the output record's `run` object."""
        return {}

    def sample_fields(self, row: Row) -> dict:
        """Extra per-sample output fields (e.g. a DeepPrune cluster)."""
        return {}

    def cost_other(self, req: Request) -> list[dict]:
        """Models other than the generator that read tokens for this request (`cost.other`
        entries: role, model, params, tokens); read before record_fields."""
        return []

    def record_fields(self, req: Request) -> dict:
        """Extra per-record output fields, read once the request is done (it may forget it then)."""
        return {}

"""The seam for per-prompt controllers (pruners): watch rows grow, stop them, hold samples back.

The engine calls a controller at two points, and only when one is set (otherwise it costs nothing):

- `admit(row)` before placing a waiting row: `START` places it, `WAIT` leaves it waiting (other
  rows take the slot meanwhile), `SKIP` never starts it (its `finish` becomes "skipped" and the
  output leaves it out).
- `step(rows)` after every decode step with the rows that just grew (token ids, per-token
  signals, `text(row)` decoded on demand): it returns the rows to stop, each with a reason, which
  becomes the row's `finish`. A stopped row frees its slot at once, exactly as a finished one.

A *search* controller (strategies/search/) also sets `step_sep`: a row whose newest text contains
it pauses there (it leaves the batch, its keys/values kept), and once every live row of a prompt
is paused or finished the scheduler calls `branch(req, paused)`, which says per row what happens
next: continue, fork into k rows sharing its keys/values so far, finish, or discard. With
`max_steps`, a row in its last allowed step no longer pauses (it runs to EOS or the length limit).
"""
from __future__ import annotations

from typing import Callable, Iterable

from strategies.rows import Request, Row

START, WAIT, SKIP = "start", "wait", "skip"
DISCARD = 0   # a `branch` action: drop the row (it is no sample of the output)


class Controller:
    """Default behaviour: start everything, stop nothing. Subclass and override."""

    step_sep: str | None = None   # set by search controllers only: rows pause when they emit it
    max_steps: int | None = None  # with step_sep: the last allowed step is not paused

    def bind(self, text: Callable[[Row], str]) -> None:
        """`text(row)` decodes a row's tokens so far (given by the engine)."""
        self.text = text

    def begin(self, req: Request) -> None:
        """A request was admitted (its rows exist, none placed yet)."""

    def admit(self, row: Row) -> str:
        return START

    def step(self, rows: Iterable[Row]) -> list[tuple[Row, str]]:
        return []

    def branch(self, req: Request, paused: list[Row]) -> list[tuple[Row, int | str]]:
        """Every live row of `req` is paused or finished (`paused` lists the paused ones, in
        `req.rows` order; the finished ones are in `req.rows`). Return (row, action) pairs:
        an int k >= 1 continues the row and forks k - 1 copies of it (a finished row is copied as
        it is), DISCARD (0) drops it from the output, a string finishes a paused row with that
        reason. Rows not named continue (paused) or stay (finished). Called only with step_sep."""
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

"""What the engine decodes: requests (one prompt, N samples), their rows, and the per-step
decisions generators hand back."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the command line imports this without loading torch
    import torch

# How a sample ended. The engine sets the first two; a controller (a pruner) names its own reason.
STOP, LENGTH = "stop", "length"
SKIPPED = "skipped"   # never started (a controller decided its prompt needs no more samples)
# Set by the engine on a row that emitted the step separator under a search controller; the
# scheduler parks the row (Backend._park) and clears it: a parked row has `paused` set instead.
PAUSED = "paused"


@dataclass
class Row:
    """One (prompt, sample) being decoded."""

    req: "Request"
    i: int
    rng: np.random.Generator
    pos: int                      # cache position of the pending input
    inp_ids: list[int]            # pending input: a mixture of these token embeddings…
    inp_w: list[float]            # …with these weights
    ids: list[int] = field(default_factory=list)
    logprob: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    self_certainty: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    top_logprobs: list[tuple[list[int], list[float]]] = field(default_factory=list)  # per token, with --top-logprobs
    forced: deque = field(default_factory=deque)  # tokens to emit regardless of the logits
    state: dict = field(default_factory=dict)     # the generator's own per-row state
    finish: str | None = None
    started: bool = False
    # search only (a controller with a step separator; see Backend._branch):
    step_ends: list[int] = field(default_factory=list)  # len(ids) at the end of each finished step
    paused: bool = False          # parked at a step end, waiting for the controller's decision
    snapshot: Any = None          # its keys/values after the prompt, up to `pos`, while it holds no slot
    bare: bool = False            # its slot lacks the prompt's keys/values (it reads the shared prefix)
    born: int = 0                 # len(ids) when it was forked: tokens before that are its parent's


@dataclass
class Request:
    """One input record: a tokenised prompt and how many samples to draw from it."""

    key: Any                # the record id (keys the random streams)
    prompt_ids: list[int]
    n: int
    payload: Any = None     # carried through untouched (the input record)
    error: str | None = None
    # (positions [P], vectors [P, D]): input embeddings that replace the prompt's own at those
    # positions in the prefill (SoftCoT's soft thoughts); none may be the last prompt token
    inject: tuple[torch.Tensor, torch.Tensor] | None = None
    sample_offset: int = 0  # the first row's sample index (a record split over several requests)
    info: dict = field(default_factory=dict)  # the generator's per-request data (SoftCoT: its chain)
    limits: list[int] | None = None  # per sample, at most this many new tokens (else the engine's max)
    rows: list[Row] = field(default_factory=list)
    prefix: list | None = None
    unplaced: int = 0
    next_i: int = 0         # a search: the next forked row's sample index

    @property
    def done(self) -> bool:
        return self.error is not None or (len(self.rows) == self.n and all(r.finish for r in self.rows))


@dataclass
class Choice:
    """A generator's device-side decision for a step's rows."""

    tokens: torch.Tensor                     # [B] next token per row (any value for rows decided on the host)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # read back to the host with the signals


@dataclass
class Step:
    """A generator's host-side decision for one row: the emitted token and the row's next input."""

    token: int
    next_ids: list[int]
    next_w: list[float]
    logprob: float | None = None  # for a token chosen on the host; else the engine's own


@dataclass
class Change:
    """What a generator changes after a row's token is recorded (see Generator.after)."""

    next_ids: list[int] | None = None   # a different next input…
    next_w: list[float] | None = None
    force: list[int] = field(default_factory=list)  # …or tokens to emit next, whatever the logits

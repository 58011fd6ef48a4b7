"""The engine's public surface: what any backend (our sampler, vLLM, vLLM under Ray) offers the
runner, which turns input records into requests and finished requests into output records without
knowing which backend ran them.

A backend takes requests (prompt ids, N samples, the record id that keys each sample's random
stream as (seed, record id, sample index)) and yields them back, in input order, with every row
finished: its token ids, per-token signals and finish reason. A controller (control.py) stops
rows mid-flight where the backend supports it.

`Backend.run` is the scheduling loop the in-process backends share (our engine, vLLM, the pruning
replay): admit requests, place rows into free slots (asking the controller first), step, retire
finished rows. A backend supplies `admit`, `place`, `step`, and `_moved` where moving a row to
another slot costs it something; `capacity` is how many rows it runs at once.
"""
from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from strategies.control import DISCARD, SKIP, START, Controller
from strategies.rows import PAUSED, SKIPPED, Request, Row

SIGNALS = ("logprob", "entropy", "self_certainty", "confidence")


@dataclass(frozen=True)
class Capabilities:
    modes: tuple[str, ...]                 # generators it can run (`--mode`)
    # per signal: "exact", or how it was approximated (recorded in the run's `signals`)
    signals: dict[str, str] = field(default_factory=lambda: {s: "exact" for s in SIGNALS})
    stop_rows: bool = True                 # a controller can stop a row mid-flight
    inject: bool = True                    # prefill from given input embeddings (Request.inject)
    compile: bool = True                   # torch.compile of the decode step (--compile)
    engine_args: bool = False              # takes the engine's own settings (--engine-arg)
    model_dir: bool = False                # loads the weights from the model's directory itself
    pause_rows: bool = False               # pauses and forks rows at a step boundary (--search)
    # the backend's own words for what it lacks, keyed by the field above ("modes", "stop_rows",
    # ...): the command line refuses with them before any model loads
    why_not: dict[str, str] = field(default_factory=dict)


class BackendUnavailable(Exception):
    """The engine cannot run here (not installed, or cannot serve these options); one line."""


def decode_text(tokenizer, ids: list[int], stop: list[str]) -> str:
    """A row's text: its tokens decoded without special tokens, cut at the first stop string."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for s in stop:
        cut = text.find(s)
        if cut >= 0:
            text = text[:cut]
    return text


def refusal(caps: Capabilities, backend: str, *, mode: str, compile: bool = False, stop_rows: bool = False,
            engine_args: bool = False, search: bool = False, others: tuple[str, ...] = ()) -> str | None:
    """Why `backend` cannot run these options, in its own words (None: it can). `stop_rows`: a
    controller (pruner) will stop rows mid-flight; `engine_args`: engine settings were given;
    `others`: the backends that have the mode, named when this one lacks it."""
    if mode not in caps.modes:
        where = " or ".join(f"--backend {o}" for o in others) or "another backend"
        return f"--mode {mode} needs {where}: {caps.why_not.get('modes', f'{backend} has no such mode')}"
    if compile and not caps.compile:
        return f"--compile does not apply to --backend {backend}: {caps.why_not.get('compile', 'it does not compile')}"
    if stop_rows and not caps.stop_rows:
        return (f"--prune needs a backend that stops traces mid-flight, not {backend}: "
                f"{caps.why_not.get('stop_rows', 'it cannot stop a trace once started')}")
    if search and not caps.pause_rows:
        return (f"--search needs --backend native: {backend} cannot pause or fork a trace at a step boundary "
                f"({caps.why_not.get('pause_rows', 'it runs whole traces')})")
    if engine_args and not caps.engine_args:
        return f"--engine-arg with --backend {backend}: {caps.why_not.get('engine_args', 'it takes no engine settings')}"
    return None


class Backend:
    name = "base"
    controller: Controller | None = None
    progress = None                        # told of every step's tokens and every finished sample
    capacity = 64                          # rows decoded at once
    # Rows a controller holds back stay waiting while later requests are admitted, up to this
    # many waiting rows per slot.
    LOOKAHEAD = 4
    # A search controller (one with a step separator) is set: rows pause, fork and are discarded
    # (see _branch). False costs nothing: _retire looks at it only for rows that left the batch.
    searching = False

    @classmethod
    def capabilities(cls) -> Capabilities:
        """What this backend can run; known before it starts (the command line checks options with it)."""
        raise NotImplementedError

    @classmethod
    def check_installed(cls) -> None:
        """Raise BackendUnavailable, saying what to install, when the engine is missing here."""

    def text_of(self, row: Row) -> str:
        """A finished row's text (stop strings cut off)."""
        raise NotImplementedError

    # ----- what a backend supplies -----------------------------------------------------
    def admit(self, req: Request) -> list[Row]:
        """Prepare a request (prefill, or nothing) and create its rows, not yet placed."""
        raise NotImplementedError

    def place(self, row: Row, active: list[Row]) -> None:
        """Start a row: it joins `active`."""
        raise NotImplementedError

    def step(self, active: list[Row]) -> None:
        """Advance the active rows; set `finish` on those that end (a controller's stops included)."""
        raise NotImplementedError

    def _moved(self, src: int, dst: int, row: Row) -> None:
        """`row` moved from slot `src` to the hole at `dst` (the engine moves its cache with it)."""

    def _retire(self, active: list[Row]) -> None:
        """Drop finished rows, moving the last active row into each hole (the batch stays dense)."""
        slot = 0
        touched = None   # a search: the requests whose rows paused or finished in this step
        while slot < len(active):
            row = active[slot]
            if row.finish is None:
                slot += 1
                continue
            if self.searching:
                touched = touched if touched is not None else {}
                touched[id(row.req)] = row.req
            if row.finish == PAUSED:   # only under a search controller
                self._park(row, slot)  # before another row moves into its slot
                row.finish, row.paused = None, True
            else:
                if self.controller is not None:
                    self.controller.finished(row)
                if self.progress is not None:
                    self.progress.sample_done()
                if not self.searching:   # a search releases the prompt once nothing can resume
                    self._release_prompt(row.req)
            last = active.pop()
            if slot < len(active):
                self._moved(len(active), slot, last)
                active[slot] = last
        if touched:
            for req in touched.values():
                self._branch(req)

    def _release_prompt(self, req: Request) -> None:
        """A request's rows have all finished or been skipped (free what they shared)."""

    # ----- search: pause, fork, discard (only with a search controller) ------------------
    def _park(self, row: Row, slot: int) -> None:
        """Keep a pausing row's state so it can resume later in any slot (the engine copies its
        keys/values out of `slot` into `row.snapshot`)."""

    def _rng(self, req: Request, i: int):
        """A forked row's random stream (sample index `i` of `req`)."""
        return None

    def _fork(self, row: Row) -> Row:
        """A copy of `row` with its own sample index and random stream: it shares the parent's
        tokens, signals and keys/values so far (the snapshot is read, never written, so one object
        serves every copy) and continues independently."""
        req = row.req
        i = req.next_i
        req.next_i += 1
        child = copy.copy(row)
        for name in ("ids", "logprob", "entropy", "self_certainty", "confidence", "top_logprobs",
                     "inp_ids", "inp_w", "step_ends"):
            setattr(child, name, list(getattr(row, name)))
        child.forced = copy.copy(row.forced)
        child.state = copy.deepcopy(row.state)
        child.i, child.rng, child.born, child.started = i, self._rng(req, i), len(row.ids), False
        return child

    def _branch(self, req: Request) -> None:
        """When every live row of `req` is paused or finished, ask the controller what happens to
        each, then apply it: resumed and forked rows go to the front of the waiting queue."""
        if any(r.finish is None and not r.paused for r in req.rows):
            return   # some row still decodes (or waits for a slot): the step is not over
        if req.next_i == 0:
            req.next_i = max((r.i for r in req.rows), default=-1) + 1
        paused = [r for r in req.rows if r.paused]
        actions = {id(r): a for r, a in self.controller.branch(req, paused)}
        keep, resume = [], []
        for r in req.rows:
            act = actions.get(id(r), 1)
            if act == DISCARD:
                r.snapshot = None
                continue
            if isinstance(act, str):
                if not r.paused:
                    raise ValueError(f"the controller finished row {r.i}, which is not paused")
                r.finish, r.paused, r.snapshot = act, False, None
                keep.append(r)
                continue
            r.paused = False
            copies = [r] + [self._fork(r) for _ in range(int(act) - 1)]
            keep.extend(copies)
            if r.finish is None:
                resume.extend(copies)
        # A search's rows are whatever the controller kept: `n` follows them, so `done` still
        # means "every row finished".
        req.rows, req.n = keep, len(keep)
        self._waiting.extendleft(reversed(resume))
        if not resume:
            self._release_prompt(req)

    # ----- the shared scheduling loop --------------------------------------------------
    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Decode every request; yield them, finished, in input order."""
        source = iter(requests)
        waiting: deque[Row] = deque()
        self._waiting = waiting   # a search puts resumed rows back here (_branch)
        active: list[Row] = []
        in_order: deque[Request] = deque()
        exhausted = False
        while True:
            exhausted = self._fill(source, waiting, active, in_order, exhausted)
            while in_order and in_order[0].done:
                yield in_order.popleft()
            if not active:
                if exhausted and not waiting:
                    break
                if waiting:  # nothing runs, and the controller lets nothing start: no step could change that
                    raise RuntimeError("the controller holds back every waiting row while none runs")
                continue
            self.step(active)
            self._retire(active)
        while in_order:
            yield in_order.popleft()

    def _fill(self, source, waiting: deque, active: list, in_order: deque, exhausted: bool) -> bool:
        """Place waiting rows into free slots, admitting requests as needed; returns `exhausted`."""
        while len(active) < self.capacity:
            row = self._next_row(waiting)
            if row is not None:
                self.place(row, active)
                continue
            if exhausted or len(waiting) >= self.LOOKAHEAD * self.capacity:
                break
            req = next(source, None)
            if req is None:
                return True
            in_order.append(req)
            waiting.extend(self.admit(req))
        return exhausted

    def _next_row(self, waiting: deque) -> Row | None:
        """The first waiting row allowed to start (rows a controller skips finish unstarted)."""
        if self.controller is None:
            return waiting.popleft() if waiting else None
        for row in list(waiting):
            verdict = self.controller.admit(row)
            if verdict == START:
                waiting.remove(row)
                return row
            if verdict == SKIP:
                waiting.remove(row)
                row.finish = SKIPPED
                row.req.unplaced -= 1
                self._release_prompt(row.req)
        return None

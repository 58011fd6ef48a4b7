"""Progress of `tts generate` on stderr.

On a terminal: a tqdm bar over records (with a total and an ETA when the input is a file) showing
tokens/s. Elsewhere (a batch job's log): a start line, a plain progress line at most every
TTS_PROGRESS_SECONDS (30) seconds, and a summary line — no carriage returns in the log.
The engine calls `update(tokens)` once per step and `sample_done()` per finished sample (so a run
whose records all decode in one batch still shows movement before its first record is written);
the command calls `record_done()` per record.
"""
from __future__ import annotations

import os
import sys
import time


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, quiet: bool, interval: float | None = None, per_record: int | None = None,
                 command: str = "generate"):
        self.total = total
        self.command = command
        # samples are counted when the command has them (per_record: samples of each record)
        self.per_record = per_record
        self.samples_total = total * per_record if total is not None and per_record else None
        self.samples = 0
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.interval = float(os.environ.get("TTS_PROGRESS_SECONDS", 30)) if interval is None else interval
        self.records = 0
        self.tokens = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        self._redrawn = 0.0

    def begin(self, **fields) -> "Progress":
        if self.quiet:
            return self
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="rec", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        else:
            shown = " ".join(f"{k}={v}" for k, v in fields.items())
            self._line(f"tts: {self.command}: {shown} records={'?' if self.total is None else self.total}")
        self.start = self.last = time.monotonic()
        return self

    def _line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def rate(self) -> float:
        return self.tokens / max(time.monotonic() - self.start, 1e-9)

    def update(self, tokens: int) -> None:
        """A decode step produced `tokens` tokens."""
        self.tokens += tokens
        now = time.monotonic()
        if self.bar is not None and now - self._redrawn > 0.5:
            self._redrawn = now
            self.bar.set_postfix_str(f"{self._samples()}{self.rate():.1f} tok/s", refresh=False)
            self.bar.refresh()
        self._maybe_line(now)

    def sample_done(self) -> None:
        """A sample finished (any reason)."""
        self.samples += 1

    def _samples(self) -> str:
        if not self.per_record:
            return ""
        of = "" if self.samples_total is None else f"/{self.samples_total}"
        return f"{self.samples}{of} samples, "

    def record_done(self) -> None:
        self.records += 1
        if self.bar is not None:
            self.bar.update(1)
        self._maybe_line(time.monotonic())

    def _maybe_line(self, now: float) -> None:
        if self.quiet or self.terminal or now - self.last < self.interval:
            return
        self.last = now
        done = f"{self.records}/{self.total}" if self.total is not None else f"{self.records}"
        eta = ""
        if self.total is not None and self.records:
            left = max(self.total - self.records, 0) * (now - self.start) / self.records
            eta = f", ETA {_duration(left)}"
        self._line(f"tts: {done} records, {self._samples()}{self.tokens} tokens, {self.rate():.1f} tok/s{eta}")

    def end(self, finished: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
        elif finished and not self.quiet and not self.terminal:
            took = time.monotonic() - self.start
            self._line(f"tts: done: {self.records} records, {self.tokens} tokens in {_duration(took)} "
                       f"({self.rate():.1f} tok/s)")


def progress_bar(quiet: bool, unit: str = "tok"):
    """A plain tqdm bar on stderr, off when quiet or when stderr is not a terminal (training loops)."""
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, smoothing=0.1)

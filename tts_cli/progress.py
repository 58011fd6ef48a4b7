"""Progress of `tts generate` on stderr.

On a terminal: a tqdm bar over records (with a total and an ETA when the input is a file) showing
tokens/s. Elsewhere (a batch job's log): a start line, a plain progress line at most every
TTS_PROGRESS_SECONDS (30) seconds, and a summary line — no carriage returns in the log.
The engine calls `update(tokens)` and `samples_finished(count)` once per step; the command calls
`record_done()` per record. Records finish only when all their samples have, and a whole run may
decode as one batch, so the finished samples (of records x samples) show that it moves.
"""
from __future__ import annotations

import os
import sys
import time


def count_records(path: str) -> int | None:
    """Non-blank lines of an input file (a cheap pass, no JSON parsing); None for stdin."""
    if path in (None, "-"):
        return None
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if not line.isspace())
    except OSError:
        return None


def selected_total(lines: int | None, shard: tuple[int, int] | None, done: int, limit: int | None) -> int | None:
    """How many records this run will process: exact without --resume, an estimate with it (the
    ids already in the output are assumed to come from this input and shard)."""
    if lines is None:
        return limit
    total = lines
    if shard:
        i, n = shard
        total = max(0, (lines - i + n - 1) // n)
    total = max(0, total - done)
    return total if limit is None else min(total, limit)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int | None, quiet: bool, interval: float | None = None):
        self.total = total
        self.quiet = quiet
        self.terminal = sys.stderr.isatty()
        self.interval = float(os.environ.get("TTS_PROGRESS_SECONDS", 30)) if interval is None else interval
        self.records = 0
        self.tokens = 0
        self.samples = 0
        self.samples_total = None
        self.counts_samples = False  # set by the first report: engines that do not report show no count
        self.start = self.last = time.monotonic()
        self.bar = None
        self._redrawn = 0.0

    def begin(self, **fields) -> "Progress":
        if self.total is not None and isinstance(fields.get("samples"), int):
            self.samples_total = self.total * fields["samples"]
        if self.quiet:
            return self
        if self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="rec", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        else:
            shown = " ".join(f"{k}={v}" for k, v in fields.items())
            self._line(f"tts: generate: {shown} records={'?' if self.total is None else self.total}")
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
            samples = f"{self._samples()} samples, " if self.counts_samples else ""
            self.bar.set_postfix_str(f"{samples}{self.tokens} tok, {self.rate():.1f} tok/s", refresh=False)
            self.bar.refresh()
        self._maybe_line(now)

    def _samples(self) -> str:
        return f"{self.samples}/{self.samples_total}" if self.samples_total is not None else str(self.samples)

    def samples_finished(self, count: int) -> None:
        """`count` samples finished in the last step."""
        self.counts_samples = True
        self.samples += count

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
        samples = f", {self._samples()} samples finished" if self.counts_samples else ""
        self._line(f"tts: {done} records, {self.tokens} tokens, {self.rate():.1f} tok/s{samples}{eta}")

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

"""JSONL in and out, the way every command does it.

Reading names the line of any malformed record; writing flushes each record as it is finished so
that an interrupted run keeps everything it completed; a closed downstream pipe ends quietly.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator

import orjson


class InputError(Exception):
    """A problem with the user's input, reported as one line (never a traceback)."""


@dataclass
class InputLine:
    """One line of an input JSONL file: its number and the object on it (or why it is not one)."""

    line: int          # 1-based line number in the input
    data: dict | None  # None when the line could not be parsed
    error: str | None = None


def open_input(path: str | None) -> IO[bytes]:
    if path in (None, "-"):
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


def read_records(path: str | None) -> Iterator[InputLine]:
    """Yield every non-blank line as an InputLine; a malformed line yields one with `error` set."""
    fh = open_input(path)
    name = "<stdin>" if path in (None, "-") else path
    try:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                yield InputLine(lineno, None, f"{name} line {lineno}: not valid JSON ({e.args[0].split(':')[0]})")
                continue
            if not isinstance(obj, dict):
                yield InputLine(lineno, None, f"{name} line {lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            yield InputLine(lineno, obj)
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def iter_objects(path: str | None) -> Iterator[tuple[int, dict]]:
    """Like read_records but stops with a clear InputError at the first malformed line."""
    for rec in read_records(path):
        if rec.error:
            raise InputError(rec.error)
        yield rec.line, rec.data


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


class JsonlWriter:
    """Writes one JSON object per line to a file or stdout, flushing each record.

    `append=True` keeps what an earlier, interrupted run wrote (used by --resume). `written`
    counts the records this writer finished, and `opened` lists the writers of the running command,
    so that Ctrl-C can say how much is on disk (the CLI reads it).
    """

    opened: list["JsonlWriter"] = []

    def __init__(self, path: str | None, append: bool = False):
        self.path = path
        self.written = 0
        JsonlWriter.opened.append(self)
        if path in (None, "-"):
            self.fh = sys.stdout.buffer
        else:
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            self.fh = open(path, "ab" if append else "wb")

    def write(self, obj: dict) -> None:
        self.fh.write(dumps(obj) + b"\n")
        self.fh.flush()
        self.written += 1

    def close(self) -> None:
        if self.fh is not sys.stdout.buffer:
            self.fh.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Selection:
    """Which input lines a run processes, in this order: `shard` (i, n) keeps every n-th line from
    the i-th, `done` (id keys already in the output, for --resume) drops those, `limit` counts the
    rest. `skipped` counts the lines dropped as done; `total` says how many lines will be kept."""

    shard: tuple[int, int] | None = None
    done: set = field(default_factory=set)
    limit: int | None = None
    id_field: str = "id"
    skipped: int = 0

    @staticmethod
    def parse_shard(spec: str | None) -> tuple[int, int] | None:
        """`i/n` (0 <= i < n), as --shard takes it; None when not given."""
        if not spec:
            return None
        try:
            i, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise InputError(f"--shard {spec!r}: expected i/n, e.g. 0/4") from None
        if n < 1 or not 0 <= i < n:
            raise InputError(f"--shard {spec!r}: need 0 <= i < n")
        return i, n

    def __call__(self, lines: Iterable[InputLine]) -> Iterator[InputLine]:
        kept = 0
        for ordinal, rec in enumerate(lines):
            if self.shard and ordinal % self.shard[1] != self.shard[0]:
                continue
            if self.done and rec.data is not None:
                if id_key(record_id(rec.data, rec.line, self.id_field)) in self.done:
                    self.skipped += 1
                    continue
            if self.limit is not None and kept >= self.limit:
                return
            kept += 1
            yield rec

    def total(self, lines: int | None) -> int | None:
        """How many of `lines` input lines this selection keeps: exact without `done`, an estimate
        with it (the ids already in the output are assumed to come from this input and shard)."""
        if lines is None:
            return self.limit
        total = lines
        if self.shard:
            i, n = self.shard
            total = max(0, (lines - i + n - 1) // n)
        total = max(0, total - len(self.done))
        return total if self.limit is None else min(total, self.limit)


def count_lines(path: str | None) -> int | None:
    """Non-blank lines of an input file (a cheap pass, no JSON parsing); None for stdin."""
    if path in (None, "-"):
        return None
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if not line.isspace())
    except OSError:
        return None


def record_id(obj: dict, line: int, id_field: str = "id") -> Any:
    """The record's id: its `id` field, else its 1-based line number."""
    v = obj.get(id_field)
    return line if v is None else v


def existing_ids(path: str | None, id_field: str = "id") -> set:
    """Ids already written to an output file (for --resume); a torn last line is dropped."""
    if path in (None, "-") or not os.path.exists(path):
        return set()
    ids = set()
    good_end = 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    for raw in data.split(b"\n"):
        end = pos + len(raw) + 1
        if raw.strip():
            try:
                obj = orjson.loads(raw)
                ids.add(_id_key(obj.get(id_field)))
                good_end = min(end, len(data))
            except orjson.JSONDecodeError:
                break  # a record cut off by the interruption: rewrite it
        pos = end
    if good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return ids


def _id_key(v: Any) -> str:
    return orjson.dumps(v).decode()


def id_key(v: Any) -> str:
    """A hashable key for an id that keeps 1 and "1" apart."""
    return _id_key(v)

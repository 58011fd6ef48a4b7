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


# --- output paths: checked and locked before any work -------------------------------------------

def _stdio(path: str | None) -> bool:
    return path in (None, "-")


def same_file(a: str, b: str) -> bool:
    """True when two paths name one file: the same resolved path, or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _check_path(path: str, inputs, option: str) -> None:
    """The checks that need no write: not an input, not a directory, its folder can exist."""
    for inp in inputs:
        if not _stdio(inp) and same_file(path, inp):
            raise InputError(f"{option} {path}: that is the input file, and writing would erase it; "
                             "write to another file")
    if os.path.isdir(path):
        raise InputError(f"{option} {path}: is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    above = os.path.dirname(path) or "."  # as the user wrote it, for the message
    while not os.path.exists(above) and os.path.dirname(above) not in ("", above):
        above = os.path.dirname(above)
    if os.path.exists(above) and not os.path.isdir(above):
        raise InputError(f"{option} {path}: {above} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot create the folder {folder}: {_why(e)}") from None


def _open_for_writing(path: str, option: str) -> int:
    """A write descriptor on `path`, created if missing, never truncated."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(f"{option} {path}: cannot write there: {_why(e)}") from None


def check_output(path: str | None, inputs=(), option: str = "-o") -> None:
    """Refuse, in one line and before anything is opened for writing, an output path that is one
    of the inputs (writing would empty it), a directory, under a file, or not writable.

    Missing folders are created (as every writer did). Nothing at `path` is changed: an existing
    file is opened without truncation and a file created by the probe is removed again."""
    if _stdio(path):
        return
    _check_path(path, inputs, option)
    existed = os.path.lexists(path)
    os.close(_open_for_writing(path, option))
    if not existed:
        os.unlink(path)


@dataclass
class _Lock:
    fd: int
    created: bool        # the file did not exist before this command
    used: bool = False   # a JsonlWriter wrote to it


_LOCKS: dict[str, _Lock] = {}


def lock_holder(path: str) -> str:
    """'process PID (command line)' holding a lock on `path`, from /proc/locks (Linux); else a phrase."""
    try:
        st = os.stat(path)
        want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        with open("/proc/locks") as fh:
            for line in fh:
                # "1: FLOCK  ADVISORY  WRITE 4711 fd:01:1234 0 EOF"; waiters are marked "->"
                parts = line.split()
                if "->" in parts or "FLOCK" not in parts[:3]:
                    continue
                i = parts.index("FLOCK")
                pid, where = parts[i + 3], parts[i + 4]
                maj, mino, ino = where.split(":")
                if (int(maj, 16), int(mino, 16), int(ino)) == want:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as c:
                            cmd = " ".join(c.read().replace(b"\0", b" ").decode(errors="replace").split())
                    except OSError:
                        cmd = ""
                    return f"process {pid}" + (f" ({cmd[:120]})" if cmd else "")
    except (OSError, ValueError):
        pass
    return "another process"


def claim_output(path: str | None, inputs=(), option: str = "-o") -> None:
    """check_output, then hold an exclusive lock (fcntl.flock) on the file until the command ends
    (release_outputs) or its writer closes: a second `tts` writing the same file stops at once,
    in one line naming the process that holds it, instead of interleaving records.

    The file is opened without truncation, so a refused or failed run leaves it as it was; a file
    this call created and nobody wrote to is removed again on release."""
    if _stdio(path):
        return
    key = os.path.realpath(path)
    if key in _LOCKS:
        return
    _check_path(path, inputs, option)  # no probe file: another process may be creating this one now
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        check_output(path, inputs, option)
        return
    created = not os.path.lexists(path)
    fd = _open_for_writing(path, option)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = lock_holder(path)
        os.close(fd)
        raise InputError(f"{option} {path}: {holder} is writing this file; wait for it to finish "
                         "or write elsewhere") from None
    _LOCKS[key] = _Lock(fd, created)


def release_output(path: str | None) -> None:
    """Give up the lock on one output (removing an empty file this command created and never wrote)."""
    if _stdio(path):
        return
    lock = _LOCKS.pop(os.path.realpath(path), None)
    if lock is None:
        return
    try:
        if lock.created and not lock.used and os.fstat(lock.fd).st_size == 0:
            os.unlink(path)
    except OSError:
        pass
    os.close(lock.fd)


def release_outputs() -> None:
    """Release every output lock of the running command (the CLI calls this when a command ends)."""
    for key in list(_LOCKS):
        release_output(key)


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
            claim_output(path)  # a no-op when the command claimed it already, before any work
            lock = _LOCKS.get(os.path.realpath(path))
            if lock is not None:
                lock.used = True
            self.fh = open(path, "ab" if append else "wb")

    def write(self, obj: dict) -> None:
        self.fh.write(dumps(obj) + b"\n")
        self.fh.flush()
        self.written += 1

    def close(self) -> None:
        if self.fh is not sys.stdout.buffer:
            self.fh.close()
            release_output(self.path)

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
    """Ids already written to an output file (for --resume), after locking it for this command.

    Only a torn *last* line (a run killed mid-write: no final newline, the start of an object) is
    repaired, by cutting it off. Any other line that is not a record with an id, or an id written
    twice, is a one-line refusal naming the line, and the file is left exactly as it was: it is
    not what an interrupted `tts generate -o` leaves (another file, or two runs mixed)."""
    if path in (None, "-"):
        return set()
    claim_output(path)
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as fh:
        data = fh.read()
    refuse = f"--resume: {path} line {{}}: {{}}; the file is left as it is (only a record cut off at its end is repaired)"
    ids: dict[str, int] = {}
    keep = len(data)
    pos = 0
    raws = data.split(b"\n")
    for k, raw in enumerate(raws):
        lineno, start = k + 1, pos
        pos += len(raw) + 1
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            torn = k == len(raws) - 1 and raw.lstrip().startswith(b"{")
            if torn:
                keep = start
                break
            raise InputError(refuse.format(lineno, f"not valid JSON ({e.args[0].split(':')[0]})")) from None
        if not isinstance(obj, dict):
            raise InputError(refuse.format(lineno, f"expected a JSON object, got {type(obj).__name__}"))
        rid = obj.get(id_field)
        if rid is None:
            raise InputError(refuse.format(lineno, f"the record has no {id_field!r}"))
        key = _id_key(rid)
        if key in ids:
            raise InputError(refuse.format(lineno, f"id {key} again (first on line {ids[key]}; two runs wrote this file?)"))
        ids[key] = lineno
    if keep < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    return set(ids)


def _line_id(line: int, implicit: bool) -> str:
    return f"line {line}" + (" (no id: its line number)" if implicit else "")


def unique_ids(records: Iterator[InputLine], id_field: str = "id", path: str | None = None) -> Iterator[InputLine]:
    """Pass input lines through, refusing an explicit null id and an id seen before (by line).

    An id is the record's identity: --resume skips what is written under it and the random
    streams are seeded from it, so two records with one id would share samples and be skipped
    together. A record without the field is identified by its line number."""
    name = "<stdin>" if path in (None, "-") else path
    seen: dict[str, tuple[int, bool]] = {}  # id -> (line, whether it was the line number)
    for rec in records:
        if rec.data is not None:
            if id_field in rec.data and rec.data[id_field] is None:
                raise InputError(f"{name} line {rec.line}: {id_field!r} is null; give an id or leave the field "
                                 "out (the line number is then the id)")
            implicit = rec.data.get(id_field) is None
            key = _id_key(record_id(rec.data, rec.line, id_field))
            if key in seen:
                first, was_line = seen[key]
                raise InputError(f"{name} {_line_id(rec.line, implicit)}: id {key} again, as on {_line_id(first, was_line)}; "
                                 "ids must be unique (they key --resume and the random streams)")
            seen[key] = (rec.line, implicit)
        yield rec


def check_input(path: str | None, id_field: str = "id") -> None:
    """Read an input file through before any work: it must be readable and its ids unique.

    stdin cannot be read twice; unique_ids checks it while it streams."""
    if path in (None, "-"):
        return
    for _ in unique_ids(read_records(path), id_field, path):
        pass


def _id_key(v: Any) -> str:
    return orjson.dumps(v).decode()


def id_key(v: Any) -> str:
    """A hashable key for an id that keeps 1 and "1" apart."""
    return _id_key(v)

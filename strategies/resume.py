"""`tts generate --resume`: append to an output file only when it was made with the same settings.

A resumed file must read as one run: the records already there and the ones appended must be
samples of the same distribution. So the new run's `run` object is compared, field by field, with
the `run` object of every record in the file, except the fields in IGNORED: those say where and
with what the run was computed and change float rounding at most (see docs/format.md), never the
sampling distribution. Everything else must match — model (and its hash), mode, n, every sampling
and soft-thinking option, penalties, seed, stop strings, max_new_tokens, raw, system, dtype.
"""
from __future__ import annotations

import orjson

from strategies.jsonl import InputError

# where/with what it ran: version, torch, device; how it was batched: batch_size, compile,
# cuda_graphs, kernels (float rounding only); top_logprobs only adds trace fields.
# On another engine: its version and engine settings (tensor parallelism, memory) likewise.
IGNORED = frozenset({"version", "torch", "device", "batch_size", "compile", "cuda_graphs", "kernels", "top_logprobs",
                     "vllm", "ray", "engine_args"})


def first_difference(old: dict, new: dict) -> str | None:
    """'field: file has X, this run has Y' for the first field (in the new run's order) that differs."""
    keys = list(new) + [k for k in old if k not in new]
    for k in keys:
        if k in IGNORED:
            continue
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if a != b:
            return f"{k}: the file has {_show(a)}, this run has {_show(b)}"
    return None


def _show(v) -> str:
    return v if v == "(absent)" else orjson.dumps(v).decode()


def check(path: str, new_run: dict) -> None:
    """Raise InputError naming the first record of `path` whose `run` differs from `new_run`."""
    seen: set[bytes] = set()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                run = orjson.loads(raw).get("run")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # the torn last line existing_ids cuts off (it refused any other bad line)
            if not isinstance(run, dict):
                raise InputError(f"--resume: {path} line {lineno} has no 'run' object (not written by tts generate?); "
                                 "use --force to append anyway")
            key = orjson.dumps(run, option=orjson.OPT_SORT_KEYS)
            if key in seen:
                continue
            seen.add(key)
            diff = first_difference(run, new_run)
            if diff:
                raise InputError(f"--resume: {path} line {lineno} was made with other settings ({diff}); "
                                 "use --force to append anyway")

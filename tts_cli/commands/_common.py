"""Pieces shared by `tts aggregate` and `tts eval` (kept light: no numpy at import)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from enum import Enum

from strategies.jsonl import InputError, iter_objects

EXTRACT_HELP = ("How answers are extracted from sample texts that have no `pred`: auto (boxed, then "
                "'the answer is', then the last number) | boxed | gsm8k | answer-is | last-number | choice.")
TRUNCATED_HELP = ("Samples cut off by the token limit (finish: length): marked = they answer only through "
                  "an explicit answer marker (\\boxed{}, ####, 'the answer is', 'Final Answer:'), never through "
                  "the last-number fallback (the default); extract = like any other sample (the old default: "
                  "a fragment such as '104 - 3' answers 3); ignore = never (pred null: no vote, never correct). "
                  "`tts eval` reports their share.")
STOP_HELP = ("Cut each sample text before extraction at a line that opens with this marker, where the model "
             "starts a new few-shot turn (repeatable; default: Question:, Q:, Problem:; --stop-at '' cuts nothing).")


class Truncated(str, Enum):
    marked = "marked"
    extract = "extract"
    ignore = "ignore"


def stop_markers(values):
    """--stop-at values: None (not given) is the default markers; '' alone cuts nothing."""
    from verifiers.extract import TURN_MARKERS

    if not values:
        return TURN_MARKERS
    return tuple(v for v in values if v)


JOBS_HELP = "Worker processes for RPC's mixture fits (0 = one per usable CPU core)."

# The method list of `--help`, written out so that `tts --help` need not import numpy;
# tests/test_aggregators.py checks that it names every registered method and option.
METHODS_HELP = """\
  majority        most frequent answer (self-consistency)
  weighted        votes weighted by path probability;
                  weight=normalized|unnormalized (normalized),
                  reduce=sum|mean (sum)
  ppl             answer of the most probable sample (mean logprob)
  pc              perplexity consistency: sum of exp(mean logprob)
                  per answer, identical texts once
  rpc             PC after Weibull-mixture pruning of unlikely paths
  self-certainty  answer of the most self-certain sample (Best-of-N)
  borda           self-certainty rank vote: (N - rank + 1)^p votes;
                  p=0.5, rank=all|answered (all: every sample
                  takes a rank, answered or not, as the reference)
  deepconf        confidence-weighted vote over the most confident
                  samples; score=bottom|min|tail|mean (bottom:
                  lowest 10% of window means), window=2048,
                  tail=2048, keep=0.9 (fraction kept: 0.9
                  DeepConf-high, 0.1 DeepConf-low); samples longer
                  than the window need `tts generate --trace`
  best-of-n       answer of the sample with the highest reward
                  (a verifier's score, e.g. from `tts score`);
                  field=reward (any per-sample number)
  weighted-best-of-n  answers scored by the sum of their
                  samples' rewards (>= 0); field=reward,
                  reduce=sum|mean (sum)"""


def default_jobs(jobs: int) -> int:
    return jobs if jobs > 0 else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def methods_or_error(specs, opts):
    from strategies.aggregators.api import parse_methods

    try:
        return parse_methods(specs, opts)
    except ValueError as e:
        raise InputError(str(e)) from None


def checked_extract(name: str) -> str:
    from verifiers import EXTRACTORS

    if name not in EXTRACTORS:
        raise InputError(f"--extract {name!r}: choose from {', '.join(EXTRACTORS)}")
    return name


def records_with_lines(path: str):
    """(records, lines): a lazy stream of the input's objects, and the line number of each one
    read so far (for errors found later, e.g. a record that lacks what a method needs)."""
    lines: list[int] = []

    def gen():
        for line, obj in iter_objects(path):
            lines.append(line)
            yield obj

    return gen(), lines


@contextmanager
def translate_pool_errors(path: str, lines: list[int]):
    """Turn a PoolError about the record at some position into a one-line error naming its line."""
    from strategies.aggregators.base import PoolError

    try:
        yield
    except PoolError as e:
        name = "<stdin>" if path in (None, "-") else path
        known = e.position is not None and e.position < len(lines)
        where = f"{name} line {lines[e.position]}: " if known else f"{name}: "
        raise InputError(where + str(e)) from None


# --- checks `tts eval` makes before computing anything -----------------------------------------

def checked_plot_path(path: str, option: str = "--plot", inputs=()) -> str:
    """--plot PATH: a format matplotlib writes (from the extension) and an existing folder (made
    here, as -o does), checked before the curve is computed rather than failing after it."""
    import matplotlib

    from strategies.jsonl import check_output

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in kinds:
        what = f"unknown format .{ext}" if ext else "no extension to tell the format"
        raise InputError(f"{option} {path}: {what}; use one of {', '.join('.' + k for k in sorted(kinds))}")
    check_output(path, inputs, option)  # not a directory, not an input, writable (folders are made)
    return path


# --- checks made before any work, for every command --------------------------------------------

def check_max_new_tokens(config, max_new_tokens: int) -> None:
    """--max-new-tokens that no prompt could reach within the model's context is refused before
    decoding (the sampler would silently stop every sample at the context instead)."""
    from strategies.cache import max_positions

    limit = max_positions(config)
    if max_new_tokens + 1 > limit:
        raise InputError(f"--max-new-tokens {max_new_tokens}: must be < {limit}, the model's context "
                         "(prompt and generated tokens together)")


def check_mode_options(mode: str, *, noise: str, soft_budget: int, projection: str | None) -> None:
    """Options that would do nothing in the chosen --mode are refused, not silently dropped."""
    from strategies.generators.params import SoftParams

    if mode != "soft":
        if noise != "none":
            raise InputError(f"--noise {noise} applies to --mode soft (this run is --mode {mode})")
        if soft_budget != SoftParams.soft_budget:
            raise InputError(f"--soft-budget {soft_budget} applies to --mode soft (this run is --mode {mode})")
    if mode != "softcot" and projection is not None:
        raise InputError(f"--projection applies to --mode softcot (this run is --mode {mode})")


_JSON_TYPES = {"dict": "an object", "list": "a list", "str": "a string", "int": "a number", "float": "a number",
               "bool": "a boolean", "NoneType": "null"}


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value).__name__, type(value).__name__)


def checked_samples(records, lines: list[int], path: str | None):
    """Pass records through, refusing (naming the line) `samples` that is not a list of objects, or a
    sample whose `text` is not a string: a hand-edited or foreign file, caught before it reaches
    the answer extractors as a traceback."""
    name = "<stdin>" if path in (None, "-") else path
    for k, rec in enumerate(records):
        where = f"{name} line {lines[k] if k < len(lines) else '?'}"
        samples = rec.get("samples")
        if samples is not None:
            if not isinstance(samples, list):
                raise InputError(f"{where}: `samples` is {_json_type(samples)}, not a list")
            for j, s in enumerate(samples):
                if not isinstance(s, dict):
                    raise InputError(f"{where}: sample {j} is {_json_type(s)}, not an object")
                if "text" in s and s["text"] is not None and not isinstance(s["text"], str):
                    raise InputError(f"{where}: sample {s.get('i', j)}: `text` is {_json_type(s['text'])}, "
                                     "not a string")
        yield rec


def counting_ids(records, counts: dict):
    """Pass records through, counting each `id` (for the duplicate-id warning)."""
    from strategies.jsonl import id_key

    for rec in records:
        if rec.get("id") is not None:
            key = id_key(rec["id"])
            counts[key] = counts.get(key, 0) + 1
        yield rec


def duplicate_ids_warning(counts: dict) -> str | None:
    dups = {k: c for k, c in counts.items() if c > 1}
    if not dups:
        return None
    example, times = next(iter(dups.items()))
    return (f"tts: warning: {len(dups)} record id(s) appear more than once (id {example} {times} times); "
            "every copy is scored as its own problem (a file concatenated twice?)")


def curve_size_warnings(ks: list[int], sizes: list[int]) -> list[str]:
    """K values that some problems cannot fill: those problems contribute all their samples."""
    if not sizes:
        return []
    lo, hi = min(sizes), max(sizes)
    out = []
    over = [k for k in ks if k > hi]
    if over:
        out.append(f"tts: warning: --curve {', '.join(map(str, over))}: more than the {hi} samples of any "
                   f"problem; such K use every sample (the same point as K={hi})")
    some = [k for k in ks if lo < k <= hi]
    if some:
        short = sum(s < min(some) for s in sizes)
        out.append(f"tts: warning: --curve {', '.join(map(str, some))}: larger than the pool of some problems "
                   f"({short} of {len(sizes)} have fewer than {min(some)} samples; smallest {lo}); "
                   "they contribute all their samples at such K")
    return out


def parse_engine_args(items: list[str] | None) -> dict:
    """--engine-arg KEY=VALUE, repeatable: JSON values where they parse (4, 0.8, true), else strings."""
    import orjson

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--engine-arg {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[key.strip()] = value
    return out

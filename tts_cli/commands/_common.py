"""Pieces shared by `tts aggregate` and `tts eval` (kept light: no numpy at import)."""
from __future__ import annotations

import os
from contextlib import contextmanager

from tts_cli.io import InputError, iter_objects

EXTRACT_HELP = ("How answers are extracted from sample texts that have no `pred`: auto (boxed, then "
                "'the answer is', then the last number) | boxed | gsm8k | answer-is | last-number | choice.")
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
                  than the window need `tts generate --trace`"""


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

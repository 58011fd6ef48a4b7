"""The engine's public surface: what any backend (our sampler, or another engine such as vLLM)
offers the runner, which turns input records into requests and finished requests into output
records without knowing which backend ran them.

A backend takes requests (prompt ids, N samples, the record id that keys each sample's random
stream as (seed, record id, sample index)) and yields them back, in input order, with every row
finished: its token ids, per-token signals and finish reason. A controller (control.py) stops
rows mid-flight where the backend supports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from strategies.rows import Request, Row

SIGNALS = ("logprob", "entropy", "self_certainty", "confidence")


@dataclass(frozen=True)
class Capabilities:
    modes: tuple[str, ...]                 # generators it can run (`--mode`)
    signals: dict[str, str] = field(default_factory=lambda: {s: "exact" for s in SIGNALS})
    stop_rows: bool = True                 # a controller can stop a row mid-flight
    inject: bool = True                    # prefill from given input embeddings (Request.inject)


class Backend:
    name = "base"

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Decode every request; yield them, finished, in input order."""
        raise NotImplementedError

    def text_of(self, row: Row) -> str:
        """A finished row's text (stop strings cut off)."""
        raise NotImplementedError

"""Per-row random streams.

A sample's stream is keyed by (seed, record id, sample index) alone, so its random numbers do not
depend on --batch-size, on sharding, or on which other prompts share its batch.
"""
from __future__ import annotations

import hashlib

import numpy as np
import orjson


def _digest(seed: int, record_id, sample_index: int) -> bytes:
    return hashlib.sha256(orjson.dumps([seed, record_id, sample_index])).digest()


def row_rng(seed: int, record_id, sample_index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int.from_bytes(_digest(seed, record_id, sample_index)[:16], "little")))


def trace_seed(seed: int, record_id, sample_index: int) -> int:
    """The same key as an integer seed, for engines that take one per request (vLLM): a trace's
    randomness still depends only on (seed, record id, sample index)."""
    digest = _digest(seed, record_id, sample_index)
    return int.from_bytes(digest[16:24], "little") >> 1   # 63 bits: a valid signed 64-bit seed

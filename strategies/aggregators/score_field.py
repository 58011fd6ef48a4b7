"""Reading an external per-sample score (`reward` from `tts score`, or any other tool's number).

The contract is the field, not the tool that wrote it (docs/format.md): a sample with an answer
must carry a finite number under the field's name, else the record is refused with one line.
Shared by `best-of-n` and `weighted-best-of-n`.
"""
from __future__ import annotations

import math

from strategies.aggregators.base import Option, PoolError

DEFAULT_FIELD = "reward"
FIELD_OPTION = Option(DEFAULT_FIELD, str, "the per-sample number to read")


def field_key(name: str) -> str:
    # A key of its own in the pool's signal arrays, so that field=votes or field=n_tokens reads the
    # sample's value without overwriting the arrays other methods use.
    return f"field:{name}"


def read_score(method: str, sample: dict, name: str) -> float:
    """The sample's finite number under `name`; PoolError naming the sample otherwise."""
    which = f"sample {sample['i']}" if "i" in sample else "a sample"
    if name not in sample or sample[name] is None:
        hint = "; add it with `tts score`" if name == DEFAULT_FIELD else ""
        raise PoolError(f"method {method} needs `{name}` in every sample with an answer ({which} has none){hint}")
    v = sample[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PoolError(f"method {method}: `{name}` of {which} is not a finite number: {v!r}")
    return float(v)

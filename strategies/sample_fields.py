"""The output record's per-sample fields: written by the runner, read by the aggregators,
evaluation and `tts show`. One place for their names (docs/format.md describes them)."""
from __future__ import annotations

from strategies.backend import SIGNALS as TOKEN_SIGNALS

ROUND = 4
# Per-sample summaries that `tts generate` writes and aggregators read.
SAMPLE_SIGNALS = ("mean_logprob", "logprob", "self_certainty", "confidence", "n_tokens")
# How a pruner stops a sample mid-flight (its `finish`). Aggregators ignore such samples by
# default; evaluation still counts their tokens.
PRUNED, LOW_CONFIDENCE, CONSENSUS = "pruned", "low-confidence", "consensus"
STOPPED = (PRUNED, LOW_CONFIDENCE, CONSENSUS)
__all__ = ["ROUND", "SAMPLE_SIGNALS", "STOPPED", "TOKEN_SIGNALS", "sample_record"]


def _r(x: float) -> float:
    return round(float(x), ROUND)


def sample_record(text: str, row, generator, trace: bool) -> dict:
    """One sample: its text, how it ended, token count, summary signals (and per-token arrays with trace)."""
    n = len(row.ids)
    lp = sum(row.logprob)
    # the sample's index in its record (a record split over requests numbers on: sample_offset)
    s = {"i": row.req.sample_offset + row.i, "text": text, "finish": row.finish, "n_tokens": n,
         "logprob": _r(lp), "mean_logprob": _r(lp / max(n, 1)),
         "entropy": _r(sum(row.entropy) / max(n, 1)),
         "self_certainty": _r(sum(row.self_certainty) / max(n, 1)),
         "confidence": _r(sum(row.confidence) / max(n, 1))}
    s.update(generator.sample_fields(row, trace))
    if trace:
        t = s.setdefault("trace", {})
        t["ids"] = list(row.ids)
        for name in TOKEN_SIGNALS:
            t[name] = [_r(v) for v in getattr(row, name)]
        if row.top_logprobs:
            t["top_logprobs"] = {"ids": [ids for ids, _ in row.top_logprobs],
                                 "logprob": [[_r(v) for v in lps] for _, lps in row.top_logprobs]}
    return s

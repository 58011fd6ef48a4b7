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
# A finished sample that a pruner's rule keeps out of the vote (DeepConf online: a warm-up trace
# below the threshold). It keeps its text and `finish`.
BELOW_THRESHOLD = "below_threshold"
__all__ = ["BELOW_THRESHOLD", "ROUND", "SAMPLE_SIGNALS", "STOPPED", "TOKEN_SIGNALS", "left_out", "sample_record"]


def left_out(sample: dict) -> bool:
    """A pruner stopped the sample, or its rule keeps it out of the vote: aggregators skip it."""
    return sample.get("finish") in STOPPED or bool(sample.get(BELOW_THRESHOLD))


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

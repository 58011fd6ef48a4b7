"""DeepConf (offline): a confidence-weighted vote over the most confident samples.

Each sample's confidence c_i comes from its per-token DeepConf confidences C_t (`score`): `bottom`
(the default, the paper's best offline measure: mean of the lowest 10% of sliding-window means,
window `window`, the whole trace when shorter), `min` (the lowest window mean), `tail` (mean of the
last `tail` tokens) or `mean`. The samples with an answer whose c_i is at or above the (1 - keep)
percentile are kept (keep=0.9, the default, is DeepConf-high; 0.1 DeepConf-low), and
V(a) = sum of c_i over the kept samples of answer a.

A sample no longer than one window (or than the tail) has the whole-trace mean as every score,
and `tts generate` writes that mean as the sample's `confidence`: such samples need no --trace.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators import register
from strategies.aggregators.base import Aggregator, Batch, Option, PoolError, class_sum


def window_means(conf: np.ndarray, window: int) -> np.ndarray:
    """Sliding-window means (stride 1); the whole trace is one window when shorter."""
    if conf.size <= window:
        return np.array([conf.mean()])
    cs = np.concatenate([[0.0], np.cumsum(conf)])
    return (cs[window:] - cs[:-window]) / window


def trace_confidence(conf, score: str, window: int, tail: int) -> float:
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    if score == "mean":
        return float(conf.mean())
    if score == "tail":
        return float(conf[-tail:].mean())
    means = window_means(conf, window)
    if score == "min":
        return float(means.min())
    count = max(1, int(means.size * 0.1))
    return float(np.partition(means, count - 1)[:count].mean())


def keep_top(c: np.ndarray, mask: np.ndarray, keep: float) -> np.ndarray:
    """Samples in `mask` whose c is at least the row's (1 - keep) percentile (linear, as numpy)."""
    n = mask.sum(axis=1)
    v = np.sort(np.where(mask, c, np.inf), axis=1)
    pos = (1.0 - keep) * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    v_lo = np.take_along_axis(v, lo[:, None], axis=1)[:, 0]
    v_hi = np.take_along_axis(v, hi[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore"):
        threshold = np.where(n > 0, v_lo + (v_hi - v_lo) * (pos - lo), np.inf)
    return mask & (c >= threshold[:, None])


@register
class DeepConf(Aggregator):
    name = "deepconf"
    summary = "confidence-weighted vote over the most confident samples"
    options = {
        "score": Option("bottom", str, "per-sample confidence", ("bottom", "min", "tail", "mean")),
        "window": Option(2048, int, "sliding-window length (bottom, min)"),
        "tail": Option(2048, int, "tokens at the end (tail)"),
        "keep": Option(0.9, float, "fraction kept: 0.1 DeepConf-low, 0.9 DeepConf-high"),
    }

    @property
    def field_name(self) -> str:
        o = self.opts
        return f"deepconf:{o['score']}:{o['window']}:{o['tail']}"

    def validate(self):
        if not 0 < self.opts["keep"] <= 1:
            raise ValueError("deepconf: option keep must be in (0, 1]")
        if self.opts["window"] < 1 or self.opts["tail"] < 1:
            raise ValueError("deepconf: options window and tail must be >= 1")

    def _span(self) -> float:
        """Trace length up to which the score is the whole-trace mean."""
        o = self.opts
        return {"mean": np.inf, "tail": o["tail"], "bottom": o["window"], "min": o["window"]}[o["score"]]

    def reads(self) -> tuple[str, ...]:
        return ("confidence",)   # through its own per-sample field, derived from it

    def sample_fields(self, sample: dict) -> dict[str, float]:
        o = self.opts
        conf = (sample.get("trace") or {}).get("confidence")
        if conf is not None:
            return {self.field_name: trace_confidence(conf, o["score"], o["window"], o["tail"])}
        value, n = sample.get("confidence"), sample.get("n_tokens")
        if value is not None and (o["score"] == "mean" or (n is not None and n <= self._span())):
            return {self.field_name: float(value)}
        if o["score"] == "mean":
            raise PoolError("deepconf needs each sample's `confidence` (or trace.confidence)")
        raise PoolError(
            f"deepconf score={o['score']} needs per-token confidences (samples[].trace.confidence) for samples "
            f"longer than {self._span()} tokens; rerun `tts generate` with --trace, or use --opt score=mean")

    def score(self, b: Batch):
        c = b.field(self.field_name)
        mask = b.votes & np.isfinite(c)
        kept = keep_top(c, mask, self.opts["keep"])
        return class_sum(np.where(kept, b.cls, -1), np.where(kept, c, 0.0), b.n_classes), kept

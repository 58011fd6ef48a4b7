"""Per-sample confidence signals, whether each sample is right, and how well a signal separates them.

The four signals are the ones the confidence papers compare (all "higher = more confident"):

- `confidence`: the sample's mean per-token DeepConf confidence (the `confidence` summary that
  `tts generate` writes, else the mean of `trace.confidence`);
- `min_window_confidence`: the lowest sliding-window mean of the per-token confidence (DeepConf's
  "lowest group confidence"; the whole trace is one window when shorter), needs `--trace`;
- `self_certainty`: the mean per-token KL(U‖p);
- `mean_logprob`: the mean token log-probability.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from strategies.aggregators.deepconf import window_means

SIGNALS = ("confidence", "min_window_confidence", "self_certainty", "mean_logprob")
LABELS = {
    "confidence": "mean confidence",
    "min_window_confidence": "lowest-window confidence",
    "self_certainty": "self-certainty",
    "mean_logprob": "mean logprob",
}
DEFAULT_WINDOW = 2048  # DeepConf's (and `tts aggregate -m deepconf`'s) default window


def lowest_window(conf, window: int) -> tuple[int, int, float] | None:
    """(start, end, mean) of the sliding window of `window` tokens with the lowest mean
    confidence (end exclusive; the whole trace when shorter); None for an empty trace."""
    conf = np.asarray(conf, dtype=np.float64)
    if conf.size == 0:
        return None
    means = window_means(conf, window)
    start = int(np.argmin(means))
    return start, min(start + window, conf.size), float(means[start])


def _number(v) -> float:
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def sample_signals(sample: dict, window: int = DEFAULT_WINDOW) -> dict[str, float]:
    """The four signals of one sample; NaN for any the sample cannot give."""
    conf = (sample.get("trace") or {}).get("confidence")
    mean_conf = _number(sample.get("confidence"))
    if np.isnan(mean_conf) and conf:
        mean_conf = float(np.mean(conf))
    low = lowest_window(conf, window) if conf else None
    mean_lp = _number(sample.get("mean_logprob"))
    if np.isnan(mean_lp) and sample.get("n_tokens"):
        mean_lp = _number(sample.get("logprob")) / sample["n_tokens"]
    return {
        "confidence": mean_conf,
        "min_window_confidence": low[2] if low else np.nan,
        "self_certainty": _number(sample.get("self_certainty")),
        "mean_logprob": mean_lp,
    }


@dataclass
class SignalTable:
    """One row per sample of every record with a gold answer."""
    correct: np.ndarray                    # (N,) bool: the sample's answer is equivalent to gold
    values: dict[str, np.ndarray]          # signal -> (N,) float, NaN where absent
    window: int
    problems: int = 0
    skipped: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.correct.size)


def labelled_signals(records: Iterable[dict], window: int = DEFAULT_WINDOW, extract: str = "auto") -> SignalTable:
    """Every sample's signals and correctness. A sample's answer is its `pred` (as `tts aggregate`
    wrote it) or, without one, extracted with `extract`; a sample without an answer is wrong.
    Records without `samples` or a gold `answer` are skipped and counted in `skipped`."""
    from strategies.evaluation.core import load_problems

    problems, skipped = load_problems(records, extract=extract)
    correct, rows = [], []
    for p in problems:
        ids = p.pool.groups.ids
        correct.extend(bool(c >= 0 and p.correct[c]) for c in ids)
        rows.extend(sample_signals(s, window) for s in p.pool.samples)
    values = {name: np.array([r[name] for r in rows], dtype=np.float64) for name in SIGNALS}
    return SignalTable(np.array(correct, dtype=bool), values, window, len(problems), skipped)


def auroc(positive, negative) -> float | None:
    """P(a positive's score > a negative's score), ties counting half (the Mann–Whitney U
    statistic over n_pos·n_neg); None when either side is empty.

    Computed from average ranks in O(n log n), so a run of 100k samples costs nothing."""
    from scipy.stats import rankdata

    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their average rank: half credit
    u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def signal_aurocs(table: SignalTable) -> dict[str, float | None]:
    """AUROC of each signal for telling correct from incorrect samples (higher = predicted
    correct); samples lacking a signal are left out of that signal's AUROC."""
    out = {}
    for name in SIGNALS:
        v = table.values[name]
        ok = ~np.isnan(v)
        out[name] = auroc(v[ok & table.correct], v[ok & ~table.correct])
    return out


@dataclass
class Grouped:
    """One record's samples grouped by extracted answer (what the report and `plot trace` show)."""
    gold: str | None                       # normalised gold answer, None without one
    preds: list                            # per sample: its answer (None: none extracted)
    group: np.ndarray                      # (N,) answer class per sample, -1: no answer
    reps: list                             # class -> representative answer
    class_correct: list                    # class -> equivalent to gold (all False without gold)

    def sample_correct(self, j: int) -> bool | None:
        """Sample j is right (True), wrong (False), or unknown: the record has no gold (None)."""
        if self.gold is None:
            return None
        c = int(self.group[j])
        return c >= 0 and self.class_correct[c]

    def order(self) -> list[int]:
        """Classes, largest first (ties: first seen first)."""
        sizes = np.bincount(self.group[self.group >= 0], minlength=len(self.reps))
        return sorted(range(len(self.reps)), key=lambda c: (-int(sizes[c]), c))


def group_record(record: dict, extract: str = "auto") -> Grouped:
    """Answers of a record's samples as equivalence classes (the aggregators' own grouping), and
    which class matches the gold `answer`."""
    from strategies.aggregators.api import build_pool
    from verifiers import equivalent, normalize_gold

    # every sample, stopped ones included: callers index the answers by sample position
    # and each sample's `pred` as `tts aggregate` wrote it (truncated=None): the report shows the
    # answers that voted
    pool = build_pool(record.get("samples") or [], extract=extract, include_stopped=True, truncated=None)
    gold = normalize_gold(record.get("answer"))
    correct = [gold is not None and equivalent(rep, gold) for rep in pool.groups.reps]
    return Grouped(gold, pool.preds, pool.groups.ids, list(pool.groups.reps), correct)

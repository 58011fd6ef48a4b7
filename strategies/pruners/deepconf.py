"""DeepConf online (methods.md §3): warm up on a prompt's first samples, then stop later samples
as soon as a full window of their token confidences averages below the warm-up threshold.

- Samples i < warmup run to completion; later samples wait (admit → WAIT) until all of them
  have finished. A prompt with n <= warmup is never pruned.
- threshold = the (1 - keep) quantile (linear interpolation, as numpy and the offline
  aggregator's keep_top) of the warm-up samples' lowest window means, i.e. the value that keeps
  the fraction `keep` of them (0.9 DeepConf-high, 0.1 DeepConf-low). Window: `window` tokens, the
  whole trace when shorter (strategies/aggregators/deepconf.py: window_means).
- A later sample stops (`low-confidence`) right after the first token at which its last `window`
  confidences average strictly below the threshold; a sample shorter than a window never stops.
- Warm-up samples whose lowest window mean is below the threshold do not vote (as the
  reference's final vote): they keep their text and `finish` and gain `below_threshold: true`,
  which every aggregator leaves out as it leaves out stopped samples. `warmup_vote=all` lets
  every warm-up sample vote (no field is written).
- Consensus (optional): whenever a sample finishes after warm-up, the finished samples that
  vote (not stopped, not below the threshold) vote with their lowest window mean as weight,
  answers grouped by `verifiers.group_answers` as in every aggregator; when the leading answer's
  share reaches `consensus`, samples not yet started are skipped and running ones stop.
- Decisions use each confidence rounded as the output record stores it (records.ROUND), so a
  replay of a stored trace (`tts prune`) sees the very numbers the online run compared.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators.base import Option
from strategies.aggregators.deepconf import window_means
from strategies.control import SKIP, START, WAIT, Controller
from strategies.pruners import register
from strategies.sample_fields import BELOW_THRESHOLD, CONSENSUS, LOW_CONFIDENCE, ROUND, STOPPED


def threshold_for(min_confs, keep: float) -> float:
    return float(np.quantile(np.asarray(min_confs, dtype=np.float64), 1.0 - keep))


def min_window(conf, window: int) -> float:
    conf = np.asarray(conf, dtype=np.float64)
    return float(window_means(conf, window).min()) if conf.size else 0.0


class _Prompt:
    def __init__(self, req, warmup):
        self.req = req
        self.warm_left = min(warmup, req.n)
        self.warm_mins: dict[int, float] = {}  # warm-up sample index -> its lowest window mean
        self.threshold: float | None = None
        self.votes: list[tuple[int, str | None, float]] = []  # (sample, answer, min-window weight)
        self.consensus = False
        self.window_sum: dict[int, float] = {}  # running sum of each later row's last window


@register
class DeepConfOnline(Controller):
    name = "deepconf"
    options = {
        "warmup": Option(16, int, "samples per prompt that run to completion and set the threshold."),
        "keep": Option(0.9, float, "fraction of warm-up traces the threshold keeps (0.9 high, 0.1 low)."),
        "window": Option(2048, int, "confidence window in tokens (the whole trace when shorter)."),
        "consensus": Option(None, float, "skip a prompt's remaining samples once the leading answer's "
                            "confidence-weighted share reaches this (e.g. 0.95). Default: off."),
        "warmup_vote": Option("above", str, "which warm-up traces vote: above (those at or above the "
                              "threshold, as the reference) | all.", ("above", "all")),
    }

    @staticmethod
    def check(s) -> None:
        if not 0 < s.keep <= 1:
            raise ValueError(f"--keep {s.keep}: must be in (0, 1]")
        if s.window < 1:
            raise ValueError(f"--window {s.window}: must be >= 1")
        if s.warmup < 1:
            raise ValueError(f"--warmup {s.warmup}: must be >= 1")
        if s.consensus is not None and not 0 < s.consensus <= 1:
            raise ValueError(f"--consensus {s.consensus}: must be in (0, 1]")

    def __init__(self, settings):
        self.s = settings
        self.prompts: dict[int, _Prompt] = {}
        self.done: dict[int, _Prompt] = {}

    @classmethod
    def from_settings(cls, settings, loaded=None):
        return cls(settings)

    def run_fields(self) -> dict:
        s = self.s
        return {"prune": {"method": "deepconf", "warmup": s.warmup, "keep": s.keep, "window": s.window,
                          "consensus": s.consensus, "warmup_vote": s.warmup_vote}}

    def begin(self, req):
        self.prompts[id(req)] = _Prompt(req, self.s.warmup)

    def admit(self, row):
        st = self.prompts.get(id(row.req))
        if st is None or row.i < self.s.warmup:
            return START
        if st.consensus:
            return SKIP
        return WAIT if st.threshold is None else START

    def step(self, rows):
        stops = []
        w = self.s.window
        for r in rows:
            st = self.prompts.get(id(r.req))
            if st is None or r.i < self.s.warmup:
                continue
            if st.consensus:
                stops.append((r, CONSENSUS))
                continue
            # a running sum over the last window (one add, one subtract per token)
            total = st.window_sum.get(r.i, 0.0) + round(r.confidence[-1], ROUND)
            if len(r.confidence) > w:
                total -= round(r.confidence[-1 - w], ROUND)
            st.window_sum[r.i] = total
            if len(r.confidence) >= w and total / w < st.threshold:
                stops.append((r, LOW_CONFIDENCE))
        return stops

    def finished(self, row):
        st = self.prompts.get(id(row.req))
        if st is None:
            return
        if row.finish not in STOPPED:
            m = min_window([round(c, ROUND) for c in row.confidence], self.s.window)
            if row.i < self.s.warmup:
                st.warm_mins[row.i] = m
                st.warm_left -= 1
            if self.s.consensus is not None:
                from verifiers import extract_answer

                st.votes.append((row.i, extract_answer(self.text(row), "auto"), m))
            if st.warm_left == 0 and st.threshold is None and st.req.n > self.s.warmup:
                st.threshold = threshold_for(list(st.warm_mins.values()), self.s.keep)
            if self.s.consensus is not None and st.threshold is not None:
                st.consensus = self._share(st) >= self.s.consensus
        if all(r.finish for r in st.req.rows):
            self.done[id(row.req)] = self.prompts.pop(id(row.req))

    def _filtered(self, st: _Prompt, i: int) -> bool:
        """Sample i is a warm-up sample below the threshold, left out of the vote."""
        return (self.s.warmup_vote == "above" and st.threshold is not None and i in st.warm_mins
                and st.warm_mins[i] < st.threshold)

    def _share(self, st: _Prompt) -> float:
        """The leading answer's share of the confidence-weighted vote (0 when nobody answered)."""
        from verifiers import group_answers

        votes = [(a, w) for i, a, w in st.votes if not self._filtered(st, i)]
        groups = group_answers([a for a, _ in votes])
        totals = np.zeros(len(groups.reps))
        for cid, (_, w) in zip(groups.ids, votes):
            if cid >= 0:
                totals[cid] += w
        return float(totals.max() / totals.sum()) if totals.size and totals.sum() > 0 else 0.0

    def sample_fields(self, row) -> dict:
        st = self.done.get(id(row.req)) or self.prompts.get(id(row.req))
        if st is not None and self._filtered(st, row.i):
            return {BELOW_THRESHOLD: True}
        return {}

    def record_fields(self, req) -> dict:
        st = self.done.pop(id(req), None) or self.prompts.pop(id(req), None)
        if st is None or st.threshold is None:
            return {}
        return {"prune": {"threshold": round(st.threshold, 6), "consensus": st.consensus}}

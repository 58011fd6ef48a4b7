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
- Consensus (optional): whenever a sample finishes after warm-up, the finished samples that were
  not stopped vote with their lowest window mean as weight; when the leading answer's share
  reaches `consensus`, samples not yet started are skipped and running ones stop (`consensus`).
- Decisions use each confidence rounded as the output record stores it (records.ROUND), so a
  replay of a stored trace (`tts prune`) sees the very numbers the online run compared.
"""
from __future__ import annotations

import numpy as np

from strategies.aggregators.deepconf import window_means
from strategies.control import SKIP, START, WAIT, Controller
from strategies.pruners import register
from strategies.sample_fields import CONSENSUS, LOW_CONFIDENCE, ROUND, STOPPED


def threshold_for(min_confs, keep: float) -> float:
    return float(np.quantile(np.asarray(min_confs, dtype=np.float64), 1.0 - keep))


def min_window(conf, window: int) -> float:
    conf = np.asarray(conf, dtype=np.float64)
    return float(window_means(conf, window).min()) if conf.size else 0.0


class _Prompt:
    def __init__(self, req, warmup):
        self.req = req
        self.warm_left = min(warmup, req.n)
        self.warm_mins: list[float] = []
        self.threshold: float | None = None
        self.votes: dict[str, float] = {}      # answer -> summed min-window confidence
        self.consensus = False
        self.window_sum: dict[int, float] = {}  # running sum of each later row's last window


@register
class DeepConfOnline(Controller):
    name = "deepconf"

    def __init__(self, settings):
        self.s = settings
        self.prompts: dict[int, _Prompt] = {}
        self.done: dict[int, _Prompt] = {}

    @classmethod
    def from_settings(cls, settings, loaded=None):
        return cls(settings)

    def run_fields(self) -> dict:
        return self.s.run_fields()

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
                st.warm_mins.append(m)
                st.warm_left -= 1
            if self.s.consensus is not None:
                self._vote(st, row, m)
            if st.warm_left == 0 and st.threshold is None and st.req.n > self.s.warmup:
                st.threshold = threshold_for(st.warm_mins, self.s.keep)
            if self.s.consensus is not None and st.threshold is not None and st.votes:
                top = max(st.votes.values())
                st.consensus = top / sum(st.votes.values()) >= self.s.consensus
        if all(r.finish for r in st.req.rows):
            self.done[id(row.req)] = self.prompts.pop(id(row.req))

    def _vote(self, st: _Prompt, row, weight: float) -> None:
        from verifiers import extract_answer, normalize_answer

        ans = normalize_answer(extract_answer(self.text(row), "auto"))
        if ans is not None:
            st.votes[ans] = st.votes.get(ans, 0.0) + weight

    def record_fields(self, req) -> dict:
        st = self.done.pop(id(req), None) or self.prompts.pop(id(req), None)
        if st is None or st.threshold is None:
            return {}
        return {"prune": {"threshold": round(st.threshold, 6), "consensus": st.consensus}}

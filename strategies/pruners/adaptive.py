"""Adaptive sample budgets: sample a prompt's traces in waves and start no more once its vote is
decided (`tts generate --adaptive RULE`, replayed by `tts prune --method adaptive`).

Rules (each decided only when a whole wave has finished, so the decision never depends on which
rows happened to share a batch — online and replay decide the same):
- `beta:T` — Adaptive-Consistency's Beta stopping rule (Aggarwal et al. 2023; its_hub's Beta
  self-consistency): with a votes for the leading answer and b for the runner-up among every
  finished sample so far, stop when P(p > 1/2) > T for p ~ Beta(a + 1, b + 1), i.e. the posterior
  (uniform prior) that the leader's share of the two exceeds the runner-up's. Waves of `wave`
  samples (default 8).
- `esc:W` — Early-Stopping Self-Consistency (Li et al. 2024): waves of W samples; stop when every
  sample of the last wave gave the same answer.

Answers are read as the aggregators read them by default (strategies/aggregators/api.py: answer_of) and
grouped by the shared equivalence (verifiers.group_answers); a sample without an answer votes for
nothing (and breaks an ESC window's agreement). Samples of a later wave wait until the earlier
waves have finished; once decided, the rest are skipped (never started, not written; the record's
`skipped` counts them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.aggregators.base import Option
from strategies.control import SKIP, START, WAIT, Controller
from strategies.pruners import register
from strategies.rows import SKIPPED
from verifiers import group_answers

RULES = ("beta", "esc")


@dataclass(frozen=True)
class AdaptiveSettings:
    rule: str = "beta"
    threshold: float = 0.95   # beta: the posterior that decides
    wave: int = 8             # samples started together; esc: the window W

    @classmethod
    def parse(cls, spec: str, wave: int | None = None) -> "AdaptiveSettings":
        """`beta:T` (0 < T < 1; `beta` alone: 0.95) or `esc:W` (W >= 2); `wave` sets beta's wave size."""
        rule, sep, arg = spec.partition(":")
        if rule not in RULES:
            raise ValueError(f"adaptive rule {spec!r}: expected beta:T or esc:W")
        try:
            if rule == "esc":
                w = int(arg) if sep else 8
                if w < 2:
                    raise ValueError
                return cls("esc", 1.0, w)
            t = float(arg) if sep else 0.95
            if not 0 < t < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"adaptive rule {spec!r}: beta:T needs 0 < T < 1, esc:W needs an integer W >= 2") from None
        if wave is not None and wave < 1:
            raise ValueError(f"--wave {wave}: must be >= 1")
        return cls("beta", t, 8 if wave is None else wave)

    def run_fields(self) -> dict:
        out = {"method": "adaptive", "rule": self.rule, "wave": self.wave}
        if self.rule == "beta":
            out["threshold"] = self.threshold
        return {"prune": out}


def beta_posterior(lead: int, second: int) -> float:
    """P(p > 1/2) for p ~ Beta(lead + 1, second + 1)."""
    from scipy.stats import beta   # here, not at import: every tts command lists the pruners' options

    return float(beta.sf(0.5, lead + 1, second + 1))


def decide(settings: AdaptiveSettings, answers: list, last_wave: list) -> tuple[bool, dict]:
    """Whether a prompt's vote is decided, from the answers of every finished sample (in sample
    order) and those of the last finished wave; with what the rule computed."""
    if settings.rule == "esc":
        groups = group_answers(last_wave).ids
        agree = len(last_wave) > 0 and groups[0] >= 0 and all(g == groups[0] for g in groups)
        return bool(agree), {"agree": bool(agree)}
    ids = group_answers(answers).ids
    counts = sorted(np.bincount(ids[ids >= 0]).tolist(), reverse=True) if (ids >= 0).any() else []
    lead, second = (counts + [0, 0])[:2]
    p = beta_posterior(lead, second) if lead else 0.0
    return p > settings.threshold, {"posterior": round(p, 6), "lead": lead, "runner_up": second}


class _Prompt:
    def __init__(self, req, wave: int):
        self.req = req
        self.answers: dict[int, object] = {}   # sample index -> its answer (None: none)
        self.waves_done = 0
        self.waves = -(-req.n // wave)
        self.decided = False
        self.stats: dict = {}


def default_answer(text: str, finish: str):
    from strategies.aggregators.api import answer_of

    return answer_of({"text": text, "finish": finish})


@register
class Adaptive(Controller):
    name = "adaptive"
    options = {
        "rule": Option("beta:0.95", str, "beta:T (stop once the posterior that the leading answer beats the "
                       "runner-up exceeds T) | esc:W (stop once a wave of W samples agrees)."),
        "wave": Option(8, int, "samples started together per prompt under beta (esc:W's wave is W)."),
    }

    @staticmethod
    def check(s) -> None:
        AdaptiveSettings.parse(s.rule, s.wave)

    @classmethod
    def from_settings(cls, settings, loaded=None):
        return cls(AdaptiveSettings.parse(settings.rule, settings.wave))

    def __init__(self, settings: AdaptiveSettings, answer=default_answer):
        """`answer(text, finish)` reads a sample's answer (None when it has none)."""
        self.s = settings
        self.answer = answer
        self.prompts: dict[int, _Prompt] = {}
        self.done: dict[int, _Prompt] = {}

    def run_fields(self) -> dict:
        return self.s.run_fields()

    def begin(self, req):
        self.prompts[id(req)] = _Prompt(req, self.s.wave)

    def admit(self, row):
        st = self.prompts.get(id(row.req))
        if st is None:
            return START
        if st.decided:
            return SKIP
        return START if row.i // self.s.wave <= st.waves_done else WAIT

    def finished(self, row):
        st = self.prompts.get(id(row.req))
        if st is None:
            return
        st.answers[row.i] = self.answer(self.text(row), row.finish)
        w = self.s.wave
        while not st.decided and st.waves_done < st.waves:
            lo, hi = st.waves_done * w, min((st.waves_done + 1) * w, st.req.n)
            if any(i not in st.answers for i in range(lo, hi)):
                break
            st.waves_done += 1
            ordered = [st.answers[i] for i in sorted(st.answers)]
            st.decided, st.stats = decide(self.s, ordered, [st.answers[i] for i in range(lo, hi)])
        # several rows can finish in one step and are told one by one: the prompt is done once
        # every row has been told (or was skipped), not once every row has a finish reason
        if all(r.i in st.answers or r.finish == SKIPPED for r in st.req.rows):
            self.done[id(row.req)] = self.prompts.pop(id(row.req))

    def record_fields(self, req) -> dict:
        st = self.done.pop(id(req), None) or self.prompts.pop(id(req), None)
        if st is None:
            return {}
        return {"prune": {"waves": st.waves_done, "decided": st.decided, **st.stats}}

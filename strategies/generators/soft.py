"""Soft Thinking: concept tokens (probability-weighted mixtures of token embeddings), with
Gumbel / Dirichlet / Gaussian randomness, Cold Stop, a soft-step budget, and a discrete answer.

Phases of a row: `pre` (ordinary tokens until --think-start appears; skipped when it is unset or
already in the prompt) → `think` (concept tokens) → `end` (the think-end string being inserted
as forced tokens, after Cold Stop or the budget) → `answer` (ordinary sampling with the answer
settings, which — unlike the reference implementation — really apply).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from strategies.engine import Step
from strategies.generators.base import Policy
from strategies.generators.discrete import DiscreteParams, draw_tokens
from strategies.sampler import SamplingParams, truncated_sorted

NOISES = ("none", "gumbel", "dirichlet", "gaussian")


@dataclass
class SoftParams:
    thinking: DiscreteParams = field(default_factory=lambda: DiscreteParams(0.6, 0.95, 30, 0.001))
    answer: DiscreteParams = field(default_factory=lambda: DiscreteParams(0.6, 0.95, 30, 0.0))
    max_topk: int = 10
    noise: str = "none"
    gumbel_tau: float = 0.5
    dirichlet_alpha: float = 4.0
    gaussian_sigma: float = 0.05
    think_start: str | None = None
    think_end: str = "</think>"
    cold_stop_entropy: float = 0.01
    cold_stop_steps: int = 256
    soft_budget: int = 0  # 0 = none

    def __post_init__(self):
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}")


def perturb(w: np.ndarray, noise: str, rng: np.random.Generator, p: SoftParams) -> np.ndarray:
    """Randomise top-K weights (zeros are outside the support and stay zero)."""
    if noise == "none":
        return w
    support = w > 0
    if noise == "gumbel":
        g = rng.gumbel(size=w.shape)
        if p.gumbel_tau <= 0:  # the limit tau -> 0: one-hot on the perturbed argmax
            out = np.zeros_like(w)
            out[np.argmax(np.where(support, np.log(np.where(support, w, 1)) + g, -np.inf))] = 1.0
            return out
        logits = np.where(support, (np.log(np.where(support, w, 1)) + g) / p.gumbel_tau, -np.inf)
        e = np.exp(logits - logits.max())
        return e / e.sum()
    if noise == "dirichlet":
        out = np.zeros_like(w)
        if support.sum() == 1:
            out[support] = 1.0
        else:
            out[support] = rng.dirichlet(p.dirichlet_alpha * w[support])
        return out
    # gaussian
    out = np.where(support, np.clip(w + rng.normal(0.0, p.gaussian_sigma, size=w.shape), 0.0, None), 0.0)
    return out / out.sum() if out.sum() > 0 else w


class Soft(Policy):
    name = "soft"

    def __init__(self, params: SoftParams | None = None):
        self.p = params or SoftParams()

    def bind(self, engine) -> None:
        super().bind(engine)
        tok = engine.tokenizer
        self.end_ids = tok(self.p.think_end, add_special_tokens=False)["input_ids"] if self.p.think_end else []
        # the end string spans at most this many top-1 tokens
        self.end_window = len(self.p.think_end) + 2

    def start(self, row) -> None:
        started = self.p.think_start is None or self.p.think_start in self.engine.tokenizer.decode(row.req.prompt_ids)
        row.state.update(phase="think" if started else "pre", steps=0, low=0, ended_by=None, start=0,
                         topk_ids=[], topk_w=[], hq=[])

    # ----- decisions ---------------------------------------------------------------
    def choose(self, rows, logits, sig):
        steps: list[Step | None] = [None] * len(rows)
        think = [b for b, r in enumerate(rows) if r.state["phase"] == "think"]
        other = [b for b, r in enumerate(rows) if r.state["phase"] != "think"]
        if other:
            toks = draw_tokens([rows[b] for b in other], logits[other], [self.p.answer] * len(other))
            for b, t in zip(other, toks):
                steps[b] = Step(t, [t], [1.0])
        if think:
            for b, st in zip(think, self._concepts([rows[b] for b in think], logits[think])):
                steps[b] = st
        return steps

    def _concepts(self, rows, logits: torch.Tensor) -> list[Step]:
        p = self.p
        sp = SamplingParams.stack([p.thinking.row()] * len(rows), logits.device)
        probs, ids = truncated_sorted(logits, sp)
        w = probs[:, : p.max_topk].double()
        w = (w / w.sum(-1, keepdim=True)).cpu().numpy()
        ids = ids[:, : p.max_topk].cpu().numpy()
        hq = self._entropy_at_temperature(logits).tolist()
        out = []
        for r, wr, ir, h in zip(rows, w, ids, hq):
            wr = perturb(wr, p.noise, r.rng, p)
            order = np.argsort(-wr, kind="stable")
            order = order[wr[order] > 0]
            wr = wr[order] / wr[order].sum()
            ir = ir[order].tolist()
            wl = wr.tolist()
            st = r.state
            st["topk_ids"].append(ir)
            st["topk_w"].append([round(x, 4) for x in wl])
            st["hq"].append(h)
            out.append(Step(ir[0], ir, wl))
        return out

    def _entropy_at_temperature(self, logits: torch.Tensor) -> torch.Tensor:
        """H(softmax(z/T)) over the full vocabulary: what Cold Stop watches (0 at T = 0)."""
        T = self.p.thinking.temperature
        if T <= 0:
            return torch.zeros(logits.shape[0])
        lq = torch.log_softmax(logits.float() / T, dim=-1)
        return -(lq.exp() * lq.nan_to_num(neginf=0.0)).sum(-1)

    # ----- phase transitions after the step's token is recorded ---------------------
    def after(self, row) -> None:
        st = row.state
        phase = st["phase"]
        if phase == "pre":
            tail = self.engine.tokenizer.decode(row.ids[-(len(self.p.think_start) + 2):])
            if self.p.think_start in tail:
                st.update(phase="think", start=len(row.ids))
        elif phase == "think":
            st["steps"] += 1
            st["low"] = st["low"] + 1 if st["hq"][-1] < self.p.cold_stop_entropy else 0
            if self.end_ids and self._chain_ends(row):
                # the model chose to stop thinking: the next input is that token exactly
                row.inp_ids, row.inp_w = [row.ids[-1]], [1.0]
                st.update(phase="answer", ended_by="think_end")
            elif self.p.cold_stop_entropy > 0 and st["low"] >= self.p.cold_stop_steps:
                self._insert_end(row, "cold_stop")
            elif self.p.soft_budget and st["steps"] >= self.p.soft_budget:
                self._insert_end(row, "budget")
        elif phase == "end" and not row.forced:
            st["phase"] = "answer"
        if row.ids[-1] in self.engine.eos_ids and st["phase"] == "think" and st["ended_by"] is None:
            st["ended_by"] = "eos"

    def _chain_ends(self, row) -> bool:
        return self.engine.tokenizer.decode(row.ids[-self.end_window:]).endswith(self.p.think_end)

    def _insert_end(self, row, why: str) -> None:
        row.state.update(phase="end" if self.end_ids else "answer", ended_by=why)
        row.forced.extend(self.end_ids)

    # ----- output -----------------------------------------------------------------
    def sample_fields(self, row, trace: bool) -> dict:
        st = row.state
        soft = {"steps": st["steps"], "ended_by": st["ended_by"] or "length"}
        out = {"soft": soft}
        if trace:
            out["trace"] = {"soft": {"start": st["start"], "topk_ids": st["topk_ids"], "topk_w": st["topk_w"],
                                     "entropy": [round(h, 4) for h in st["hq"]]}}
        return out

    def run_fields(self) -> dict:
        p = asdict(self.p)
        think, answer = p.pop("thinking"), p.pop("answer")
        out = dict(think)
        out.update({f"answer_{k}": v for k, v in answer.items()})
        out.update(p)
        return out

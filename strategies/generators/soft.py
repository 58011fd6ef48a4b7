"""Soft Thinking: concept tokens (probability-weighted mixtures of token embeddings), with
Gumbel / Dirichlet / Gaussian randomness, Cold Stop, a soft-step budget, and a discrete answer.

Phases of a row: `pre` (ordinary tokens until --think-start appears; skipped when it is unset or
already in the prompt) → `think` (concept tokens) → `end` (the think-end string being inserted
as forced tokens, after Cold Stop or the budget) → `answer` (ordinary sampling with the answer
settings, which — unlike the reference implementation — really apply).
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from strategies.generators.base import Generator
from strategies.generators.discrete import draw_tokens
from strategies.generators.params import ANSWER, NOISES, THINKING, SoftParams  # noqa: F401 (re-exported)

# Dirichlet over the truncated distribution reads at most this many of its tokens per row: beyond
# rank 1,024 a token's concentration alpha*p is so small that its draw never reaches the top K.
DIRICHLET_WIDTH = 1024
from strategies.rows import Change, Choice, Step
from strategies.sampler import SamplingParams, truncated_sorted

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


class Soft(Generator):
    name = "soft"

    def __init__(self, params: SoftParams | None = None):
        self.p = params or SoftParams()
        self._stacked: dict[tuple, SamplingParams] = {}   # (phase, rows, device) -> settings on the device

    def setup(self, text) -> None:
        super().setup(text)
        self.end_ids = text.encode(self.p.think_end) if self.p.think_end else []
        # the end string spans at most this many top-1 tokens
        self.end_window = len(self.p.think_end) + 2

    def start(self, row) -> None:
        started = self.p.think_start is None or self.p.think_start in self.text.decode(row.req.prompt_ids)
        row.state.update(phase="think" if started else "pre", steps=0, low=0, ended_by=None, start=0,
                         topk_ids=[], topk_w=[], hq=[])

    # ----- device side: tokens for ordinary rows, truncated top-K for thinking rows --------
    def choose(self, rows, logits, sig):
        think = [b for b, r in enumerate(rows) if r.state["phase"] == "think"]
        other = [b for b, r in enumerate(rows) if r.state["phase"] != "think"]
        if not think:  # no concept step in this batch: plain sampling, no gathers
            return Choice(draw_tokens(rows, logits, self._settings("answer", len(rows), logits.device)))
        tokens = torch.zeros(len(rows), dtype=torch.long, device=logits.device)
        if other:
            idx = torch.tensor(other, device=logits.device)
            tokens[idx] = draw_tokens([rows[b] for b in other], logits[idx], self._settings("answer", len(other), logits.device))
        t_idx = torch.tensor(think, device=logits.device)
        z = logits[t_idx]
        sp = self._settings("thinking", len(think), logits.device)
        probs, ids = truncated_sorted(z, sp)
        width = DIRICHLET_WIDTH if self._dirichlet_truncated else self.p.max_topk
        ids = ids[:, :width]
        # raw log p of each candidate: the emitted token is chosen among them on the host
        logp = sig.shifted[t_idx].gather(1, ids) - sig.log_norm[t_idx, None]
        extras = {"w": probs[:, :width], "ids": ids, "logp": logp, "hq": self._cold_stop_entropy(z, sig, t_idx)}
        if self.end_ids:  # Cold Stop emits the think-end token in place of a concept token
            extras["logp_end"] = sig.shifted[t_idx, self.end_ids[0]] - sig.log_norm[t_idx]
        return Choice(tokens, extras)

    @property
    def _dirichlet_truncated(self) -> bool:
        return self.p.noise == "dirichlet" and self.p.dirichlet_on == "truncated"

    def _settings(self, phase: str, n: int, device) -> SamplingParams:
        """The phase's settings for n rows, stacked once per row count (not uploaded every step)."""
        key = (phase, n, device)
        if key not in self._stacked:
            self._stacked[key] = SamplingParams.stack([getattr(self.p, phase)] * n, device)
        return self._stacked[key]

    def _cold_stop_entropy(self, logits: torch.Tensor, sig, t_idx) -> torch.Tensor:
        """What Cold Stop watches: H(softmax(z/T)) over the full vocabulary. At T = 0 that entropy
        is 0 at every step and Cold Stop would always fire after L steps, so there it watches the
        temperature-1 distribution's entropy instead (the engine's own signal)."""
        T = self.p.thinking.temperature
        if T <= 0:
            return sig.entropy[t_idx]
        lq = torch.log_softmax(logits.float() / T, dim=-1)
        return -(lq.exp() * lq.nan_to_num(neginf=0.0)).sum(-1)

    # ----- host side: concept tokens (with noise), then phase changes ---------------------
    def decide(self, rows, host):
        steps = super().decide(rows, host)
        if "w" not in host:
            return steps
        p = self.p
        think = [b for b, r in enumerate(rows) if r.state["phase"] == "think"]
        w = host["w"].astype(np.float64)  # normalised in float64, as the weights always were
        if not self._dirichlet_truncated:
            w = w[:, : p.max_topk]
        w = w / w.sum(-1, keepdims=True)
        ids = host["ids"].astype(np.int64)
        for j, b in enumerate(think):
            r = rows[b]
            st = r.state
            h = float(host["hq"][j])
            st["low"] = st["low"] + 1 if h < p.cold_stop_entropy else 0
            if self.end_ids and p.cold_stop_entropy > 0 and st["low"] >= p.cold_stop_steps:
                # Cold Stop, as the reference does it: the step that reaches L low-entropy steps
                # emits the think-end token instead of a concept token
                end = self.end_ids[0]
                steps[b] = Step(end, [end], [1.0], logprob=float(host["logp_end"][j]))
                st["cold_stop_now"] = True
                continue
            wr = perturb(w[j], p.noise, r.rng, p)
            order = np.argsort(-wr, kind="stable")
            order = order[wr[order] > 0][: p.max_topk]   # truncated Dirichlet: its top K after the draw
            wr = wr[order] / wr[order].sum()
            ir = ids[j][order].tolist()
            wl = wr.tolist()
            st["topk_ids"].append(ir)
            st["topk_w"].append([round(x, 4) for x in wl])
            st["hq"].append(h)
            steps[b] = Step(ir[0], ir, wl, logprob=float(host["logp"][j][order[0]]))
        return steps

    def after(self, row):
        st = row.state
        phase = st["phase"]
        change = None
        if phase == "pre":
            tail = self.text.decode(row.ids[-(len(self.p.think_start) + 2):])
            if self.p.think_start in tail:
                st.update(phase="think", start=len(row.ids))
        elif phase == "think" and st.pop("cold_stop_now", False):
            # this step emitted the think-end string's first token; the rest follows as forced tokens
            st.update(phase="end" if len(self.end_ids) > 1 else "answer", ended_by="cold_stop")
            change = Change(force=list(self.end_ids[1:]))
        elif phase == "think":
            st["steps"] += 1
            if self.end_ids and self._chain_ends(row):
                # the model chose to stop thinking: the next input is that token exactly
                change = Change(next_ids=[row.ids[-1]], next_w=[1.0])
                st.update(phase="answer", ended_by="think_end")
            elif not self.end_ids and self.p.cold_stop_entropy > 0 and st["low"] >= self.p.cold_stop_steps:
                change = self._insert_end(row, "cold_stop")   # no think-end string: just answer
            elif self.p.soft_budget and st["steps"] >= self.p.soft_budget:
                change = self._insert_end(row, "budget")
        elif phase == "end" and not row.forced:
            st["phase"] = "answer"
        if row.ids[-1] in self.text.eos_ids and st["phase"] == "think" and st["ended_by"] is None:
            st["ended_by"] = "eos"
        return change

    def _chain_ends(self, row) -> bool:
        return self.text.decode(row.ids[-self.end_window:]).endswith(self.p.think_end)

    def _insert_end(self, row, why: str) -> Change:
        row.state.update(phase="end" if self.end_ids else "answer", ended_by=why)
        return Change(force=list(self.end_ids))

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

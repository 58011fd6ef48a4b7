"""Logits processing, sampling and per-token signals: separate stages over a batch of rows.

Every function takes a [B, V] tensor of float32 logits and per-row settings, so rows with
different settings (a soft row thinking next to a discrete row answering) share one call.
Randomness enters only as per-row uniforms/noise drawn from each row's own stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from strategies import cpu_kernels

CONFIDENCE_TOP_K = 20  # DeepConf's k


@dataclass
class Signals:
    """Per-row statistics of the raw (temperature 1, untruncated) next-token distribution."""

    shifted: torch.Tensor         # [B, V] logits minus each row's maximum (real vocabulary only)
    log_norm: torch.Tensor        # [B] log Σ exp(shifted): log p = shifted - log_norm
    entropy: torch.Tensor         # [B]
    self_certainty: torch.Tensor  # [B]
    confidence: torch.Tensor      # [B]
    logits: torch.Tensor | None = None  # the logits these were computed from (see sample's `shifted`)

    @property
    def logp(self) -> torch.Tensor:
        """[B, V] log-probabilities (materialised on demand: the decode loop needs only `logprob`)."""
        return self.shifted - self.log_norm[:, None]

    def logprob(self, tokens: torch.Tensor) -> torch.Tensor:
        """log p of one token per row, [B]."""
        return self.shifted.gather(1, tokens[:, None]).squeeze(1) - self.log_norm


def raw_signals(logits: torch.Tensor, vocab_size: int) -> Signals:
    """Entropy, self-certainty KL(U||p) and DeepConf confidence from the raw distribution.

    Padded embedding rows beyond the tokenizer's vocabulary are not tokens: they are dropped
    before the softmax so that V in self-certainty is the real vocabulary size. Everything is
    derived from one shifted copy of the logits and one exp, without materialising log p: these
    passes over [B, 49k] run every step. On CPU, where the compiled kernels build, the same
    formulas run as one pass per row (cpu_kernels.cpp: signals; float32 sums in another order).
    """
    k = min(CONFIDENCE_TOP_K, vocab_size)
    if (logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 2
            and logits.stride(-1) == 1 and cpu_kernels.available()):
        y, log_norm, entropy, self_certainty, confidence = torch.ops.tts_cpu.signals(logits, vocab_size, k)
        return Signals(y, log_norm, entropy, self_certainty, confidence, logits)
    z = logits[:, :vocab_size].float()
    y = z - z.amax(-1, keepdim=True)
    e = y.exp()
    total = e.sum(-1)
    log_norm = total.log()
    # H = -Σ p log p = log_norm - Σ e·y / total
    ey = torch.linalg.vecdot(e, y)
    bad = ey.isnan()  # 0 · -inf from tokens with zero probability (-inf logits); they add 0
    if bool(bad.any()):
        ey[bad] = torch.linalg.vecdot(e[bad], y[bad].nan_to_num(neginf=0.0))
    entropy = log_norm - ey / total
    # KL(U || p) = -log V - mean(log p)
    self_certainty = -math.log(vocab_size) - (y.mean(-1) - log_norm)
    confidence = log_norm - y.topk(k, dim=-1).values.mean(-1)
    return Signals(y, log_norm, entropy, self_certainty, confidence, logits)


class Paths(NamedTuple):
    """Which code paths a batch's settings need: known on the host, so `sample` need not ask the
    device (each such question is a sync on a GPU)."""

    all_greedy: bool
    any_greedy: bool
    any_truncation: bool


@dataclass
class SamplingParams:
    """Per-row truncation settings as [B] tensors (top_k 0 = off, top_p 1 = off, min_p 0 = off)."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    paths: Paths | None = None   # when known on the host

    @classmethod
    def stack(cls, rows, device) -> "SamplingParams":
        """From per-row settings with fields temperature, top_p, top_k, min_p (e.g. DiscreteParams)."""
        t = torch.tensor([(r.temperature, r.top_k, r.top_p, r.min_p) for r in rows], dtype=torch.float64,
                         device=device)
        greedy = [r.temperature <= 0 for r in rows]
        paths = Paths(all(greedy), any(greedy), any(r.top_k > 0 or r.top_p < 1 or r.min_p > 0 for r in rows))
        return cls(t[:, 0].float(), t[:, 1].long(), t[:, 2].float(), t[:, 3].float(), paths)

    def which(self) -> Paths:
        if self.paths is not None:
            return self.paths
        greedy = self.temperature <= 0
        return Paths(bool(greedy.all()), bool(greedy.any()), self.truncates())

    def truncates(self) -> bool:
        return bool((self.top_k > 0).any() or (self.top_p < 1).any() or (self.min_p > 0).any())


def truncated_sorted(logits: torch.Tensor, sp: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, then top-k, top-p, min-p; returns renormalised probabilities sorted descending
    and their token ids, both [B, C] (C = the largest top-k when every row sets one, else V).

    Rows with temperature 0 get the one-hot argmax distribution.
    """
    V = logits.shape[-1]
    greedy = sp.temperature <= 0
    temp = torch.where(greedy, torch.ones_like(sp.temperature), sp.temperature)
    z = logits.float() / temp[:, None]
    all_topk = bool((sp.top_k > 0).all())
    cap = min(int(sp.top_k.max()), V) if all_topk else V
    vals, ids = torch.topk(z, cap, dim=-1)  # sorted descending; with cap == V a full sort
    rank = torch.arange(cap, device=z.device)[None, :]
    k = torch.where(sp.top_k > 0, sp.top_k.clamp(max=cap), torch.full_like(sp.top_k, cap))
    vals = vals.masked_fill(rank >= k[:, None], float("-inf"))
    probs = torch.softmax(vals, dim=-1)
    # top-p: keep the smallest prefix whose mass reaches top_p (the token that crosses it stays).
    before = probs.cumsum(-1) - probs
    drop = before >= sp.top_p[:, None]
    # min-p: drop tokens below min_p times the most likely one.
    drop |= probs < (sp.min_p[:, None] * probs[:, :1])
    drop[:, 0] = False
    drop |= greedy[:, None] & (rank > 0)
    probs = probs.masked_fill(drop, 0.0)
    probs = probs / probs.sum(-1, keepdim=True)
    return probs, ids


def sample_sorted(probs: torch.Tensor, ids: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: the first position whose cumulative mass exceeds u (one uniform per row).

    Using a caller-supplied uniform (not torch's global generator) is what makes a row's draw
    independent of which other rows share the batch.
    """
    return ids.gather(1, _inverse_cdf(probs, u)[:, None]).squeeze(1)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the first position whose cumulative weight exceeds u·total (weights >= 0, any scale)."""
    cdf = weights.cumsum(-1)
    target = (u.to(cdf.dtype) * cdf[:, -1])[:, None]
    pos = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # The first cdf value strictly above u·total never falls on a zero-weight position; only
    # rounding (u near 1) can run past the end, and then the last position with mass is the draw.
    over = pos >= weights.shape[-1]
    if bool(over.any()):
        rank = torch.arange(weights.shape[-1], device=weights.device)
        pos = pos.masked_scatter(over, torch.where(weights[over] > 0, rank, 0).amax(-1))
    return pos


def sample(logits: torch.Tensor, sp: SamplingParams, u: torch.Tensor,
           shifted: torch.Tensor | None = None) -> torch.Tensor:
    """One token id per row: greedy for temperature 0, else a draw from the truncated distribution.

    `shifted`: the logits minus each row's maximum when the caller has them already (the raw
    signals' `shifted`, for these very logits); an untruncated draw then skips two passes over
    the vocabulary."""
    all_greedy, any_greedy, truncates = sp.which()
    if all_greedy:
        return logits.argmax(-1)
    if not truncates:
        greedy = sp.temperature <= 0
        temperature = torch.where(greedy, torch.ones_like(sp.temperature), sp.temperature)
        drawn = _sample_untruncated(logits, temperature, u, shifted)
        return torch.where(greedy, logits.argmax(-1), drawn) if any_greedy else drawn
    probs, ids = truncated_sorted(logits, sp)
    return sample_sorted(probs, ids, u)


def _sample_untruncated(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor,
                        shifted: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF draw from softmax(z/T) in vocabulary order, without sorting or normalising.

    The same draw as sample_sorted over the identity order, in fewer passes over the vocabulary.
    """
    if shifted is None:
        z = logits.float()
        shifted = z - z.amax(-1, keepdim=True)
    return _inverse_cdf((shifted / temperature[:, None]).exp_(), u)


def apply_penalties(logits: torch.Tensor, prompt_mask: torch.Tensor, counts: torch.Tensor,
                    repetition: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    """vLLM's repetition / presence / frequency penalties, per row, before temperature and truncation.

    prompt_mask [B, V] bool: tokens of the row's prompt; counts [B, V]: how often each token was
    emitted so far; repetition, presence, frequency [B]. Repetition divides the logits of tokens
    seen in the prompt or the output by p when positive and multiplies them by p when not;
    presence subtracts p once from every token that appeared in the output; frequency subtracts
    p x its count. Returns new float32 logits (the raw ones still feed the signals).
    """
    z = logits.float()
    appeared = counts > 0
    rep = torch.where(prompt_mask | appeared, repetition[:, None], 1.0)
    z = z * torch.where(z > 0, 1.0 / rep, rep)
    return z - frequency[:, None] * counts - presence[:, None] * appeared.to(z.dtype)

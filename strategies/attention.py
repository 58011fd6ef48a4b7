"""Attention kernels of the decoder: causal attention over a prompt, one query per row against
the cache, and attention that also returns the log-sum-exp of its scores (for merging two
attentions over disjoint key sets exactly, as prefix sharing does)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# A private op (it is what F.scaled_dot_product_attention runs on CPU); fall back if a release drops it.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """A prompt attending to itself: q [1, heads, L, hd], k/v [1, kv_heads, L, hd]."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


def over_cache(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One query per row against its slot: qg [B, kv_heads, group, hd] (the query heads sharing a
    key/value head are that head's query rows, so K/V are never repeated), k/v [B, kv_heads, S, hd],
    mask [B, 1, 1, S] additive."""
    return F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, scale=scale)


def position_mask(positions: torch.Tensor, lo: int, span: int, dtype, start: torch.Tensor | None = None):
    """Additive mask [B, 1, 1, span - lo]: row b sees slot positions start[b]..positions[b]."""
    cols = torch.arange(lo, span, device=positions.device)[None, :]
    allowed = cols <= positions[:, None]
    if start is not None:
        allowed &= cols >= start[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=positions.device).masked_fill_(~allowed, float("-inf"))
    return mask[:, None, None, :]


def attend(q, k, v, mask=None, scale=None):
    """Attention output and log-sum-exp of the scores, for [B, heads, Lq, hd] queries against
    [B, heads, Lk, hd] keys/values, with an optional additive float mask broadcast to
    [B, heads, Lq, Lk]. On CPU this is SDPA's own fused kernel, which returns it; elsewhere plain math."""
    if q.device.type == "cpu" and _CPU_FLASH is not None:
        return _CPU_FLASH(q, k, v, 0.0, False, attn_mask=mask, scale=scale)
    return attend_reference(q, k, v, mask, scale)


def attend_reference(q, k, v, mask=None, scale=None):
    s = (q @ k.transpose(-1, -2)).float() * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        s = s + mask
    lse = torch.logsumexp(s, dim=-1)
    out = (torch.exp(s - lse[..., None]).to(v.dtype)) @ v
    return out, lse

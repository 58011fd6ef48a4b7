"""One query per row against the cache, as a Triton kernel (GPU decode steps).

SDPA has no kernel for this case that reads only what it needs: it takes an additive mask over
the step's whole key span, so every row reads every column up to the longest row (and the
graphs' span bucket), and its kernels are built for many queries, not one per row. This kernel
(split-key "flash decoding") runs one program per (row, key/value head, key split): it loads the
query heads that share the key/value head, reads only the row's own positions 0..position from
the cache in blocks, and keeps a running softmax in float32. Splits, when the rows alone are too
few programs to fill the GPU, each return their part's output and log-sum-exp, merged after.

Shapes fit the decoder's cache: keys/values [slots, kv_heads, capacity, head_dim] (rows in slots
0..B-1), queries [B, kv_heads, group, head_dim]. The grid and the split depend only on (B, span),
never on the positions, so a step that uses it is still capturable as a CUDA graph.

Without Triton (the CPU build of torch) `available()` is False and the decoder keeps SDPA.
"""
from __future__ import annotations

from functools import lru_cache

import torch

try:
    import triton
    import triton.language as tl
except ImportError:   # CPU-only installs: the decoder uses SDPA
    triton = None

BLOCK_N = 64      # keys per block: 64 x head_dim of bf16 keys and values fit the registers well
NUM_WARPS = 4
NUM_STAGES = 2


def available() -> bool:
    return triton is not None


def supports(head_dim: int, group: int) -> bool:
    """tl.dot wants power-of-two tiles of at least 16: the head dim is one, the group is padded."""
    return available() and head_dim >= 16 and head_dim & (head_dim - 1) == 0 and group <= 64


def splits(rows: int, kv_heads: int, span: int, device: torch.device) -> int:
    """Key splits per (row, head): enough programs for about two per multiprocessor, never splits
    of fewer than two blocks."""
    if device.type != "cuda":
        return 1
    want = -(-2 * _multiprocessors(device.index) // max(rows * kv_heads, 1))
    return max(1, min(want, span // (2 * BLOCK_N)))


@lru_cache(maxsize=None)
def _multiprocessors(index: int | None) -> int:
    return torch.cuda.get_device_properties(torch.device("cuda", index)).multi_processor_count


if triton is not None:
    @triton.jit
    def _kernel(Q, K, V, POS, O, LSE,
                sq_b, sq_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_s, sl_b, sl_h,
                scale_log2, chunk,
                G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr,
                IEEE: tl.constexpr):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        s = tl.program_id(2)
        end = tl.load(POS + b) + 1          # the row sees its positions 0..position
        lo = s * chunk
        hi = tl.minimum(lo + chunk, end)
        g = tl.arange(0, G_PAD)
        d = tl.arange(0, D)
        heads = kvh * G + g
        q = tl.load(Q + b * sq_b + heads[:, None] * sq_h + d[None, :], mask=(g < G)[:, None], other=0.0)
        m = tl.full([G_PAD], float("-inf"), tl.float32)
        l = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        k_row = K + b * sk_b + kvh * sk_h
        v_row = V + b * sv_b + kvh * sv_h
        for start in range(lo, hi, BLOCK):
            n = start + tl.arange(0, BLOCK)
            inside = n < hi
            k = tl.load(k_row + n[:, None] * sk_n + d[None, :], mask=inside[:, None], other=0.0)
            if IEEE:
                sc = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                sc = tl.dot(q, tl.trans(k))
            sc = tl.where(inside[None, :], sc * scale_log2, float("-inf"))   # base-2 logits
            m_new = tl.maximum(m, tl.max(sc, 1))
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(sc - m_new[:, None])
            l = l * alpha + tl.sum(p, 1)
            v = tl.load(v_row + n[:, None] * sv_n + d[None, :], mask=inside[:, None], other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        seen = l > 0                      # a split past the row's position saw no keys
        out = acc / tl.where(seen, l, 1.0)[:, None]
        lse = tl.where(seen, (m + tl.log2(tl.where(seen, l, 1.0))) * 0.6931471805599453, float("-inf"))
        keep = g < G
        tl.store(O + b * so_b + heads[:, None] * so_h + s * so_s + d[None, :], out, mask=keep[:, None])
        tl.store(LSE + b * sl_b + heads * sl_h + s, lse, mask=keep)


def over_cache(qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
               span: int, scale: float) -> torch.Tensor:
    """Attention of qg [B, kv_heads, group, hd] over each row's slot positions 0..positions[b],
    from the cache's k/v [slots >= B, kv_heads, capacity, hd]; returns [B, kv_heads, group, hd] in
    qg's dtype. `span` (> every position) sizes the split of the keys."""
    B, n_kv, G, D = qg.shape
    S = splits(B, n_kv, span, qg.device)
    chunk = -(-span // (S * BLOCK_N)) * BLOCK_N
    q = qg.reshape(B, n_kv * G, D)
    if q.stride(-1) != 1:
        q = q.contiguous()
    o = torch.empty(B, n_kv * G, S, D, dtype=torch.float32, device=qg.device)
    lse = torch.empty(B, n_kv * G, S, dtype=torch.float32, device=qg.device)
    _kernel[(B, n_kv, S)](
        q, k, v, positions, o, lse,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        scale * 1.4426950408889634, chunk,
        G=G, G_PAD=max(16, triton.next_power_of_2(G)), D=D, BLOCK=BLOCK_N,
        IEEE=qg.dtype == torch.float32, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    if S == 1:
        out = o[:, :, 0]
    else:   # merge the splits by their log-sum-exp (split 0 always saw position 0)
        w = torch.softmax(lse, dim=-1)
        out = (o * w[..., None]).sum(2)
    return out.to(qg.dtype).view(B, n_kv, G, D)

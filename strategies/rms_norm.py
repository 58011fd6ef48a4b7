"""RMSNorm as one Triton kernel (GPU decode and prefill).

transformers' RMSNorm is seven or eight kernels (to float32, square, mean, add, rsqrt, multiply,
cast, scale); a decode step of a 28-layer Qwen3 runs 113 of them, and on a GPU each small kernel
costs more than the bytes it moves. This kernel computes the same thing in one pass per row:

    y = weight * (x_f32 * rsqrt(mean(x_f32²) + eps)).to(x.dtype)

— the same float32 statistics, the same rounding to the input's dtype before the weight. Only the
order of the float32 sum differs, so results agree to float32 rounding (one unit in the last place
of a half-precision output, rarely). Used for the model types whose norm is that formula
(layers.SUPPORTED); without Triton (the CPU build of torch) the modules run as they are.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:   # CPU-only installs: the modules' own norms
    triton = None


if triton is not None:
    @triton.jit
    def _kernel(X, W, Y, n, sx, sy, eps, BLOCK: tl.constexpr):
        r = tl.program_id(0)
        c = tl.arange(0, BLOCK)
        inside = c < n
        x_in = tl.load(X + r * sx + c, mask=inside, other=0.0)
        x = x_in.to(tl.float32)
        var = tl.sum(x * x, 0) / n
        y = (x * tl.math.rsqrt(var + eps)).to(x_in.dtype)
        w = tl.load(W + c, mask=inside, other=0.0)
        out = w.to(tl.float32) * y.to(tl.float32)
        tl.store(Y + r * sy + c, out.to(Y.dtype.element_ty), mask=inside)


def rms_norm(module, x: torch.Tensor) -> torch.Tensor:
    """What `module(x)` returns for a Llama-style RMSNorm module (weight, variance_epsilon), over
    the last dimension of x, in one kernel."""
    n = x.shape[-1]
    rows = x.reshape(-1, n)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    w = module.weight
    out = torch.empty(rows.shape, dtype=torch.result_type(w, x), device=x.device)
    block = triton.next_power_of_2(n)
    _kernel[(rows.shape[0],)](rows, w, out, n, rows.stride(0), out.stride(0), module.variance_epsilon,
                              BLOCK=block, num_warps=min(max(block // 256, 1), 8))
    return out.view(x.shape)


def module_norm(module, x: torch.Tensor) -> torch.Tensor:
    return module(x)

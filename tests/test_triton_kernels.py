"""The Triton kernels of the GPU path (decode attention, RMSNorm) against independent
computations: a float64 softmax written out by hand, transformers' own norm modules, and the
decoder's torch kernels.

Runs on CUDA, or on the CPU under Triton's interpreter (`TRITON_INTERPRET=1` with triton
installed); skipped otherwise, as in CI, whose CPU torch has no Triton.
"""
import math
import os

import pytest
import torch

from strategies import decode_attention, rms_norm
from strategies.decoder import Decoder
from strategies.tiny import tiny_model
from tests.test_engine import PROMPTS, chat_ids

if torch.cuda.is_available():
    DEVICE = "cuda"
elif decode_attention.available() and os.environ.get("TRITON_INTERPRET") == "1":
    DEVICE = "cpu"
else:
    DEVICE = None
needs_kernel = pytest.mark.skipif(DEVICE is None or not decode_attention.available(),
                                  reason="needs Triton on CUDA, or its interpreter")
# the interpreter computes bf16 products wrongly; float16 exercises the same half-precision path
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16


def brute_force(q, k, v, positions, scale):
    """Row b, head h: softmax over positions 0..positions[b] of q·k, in float64, one by one."""
    B, n_kv, G, D = q.shape
    out = torch.zeros(B, n_kv, G, D, dtype=torch.float64)
    for b in range(B):
        n = int(positions[b]) + 1
        for h in range(n_kv):
            keys, values = k[b, h, :n].double().cpu(), v[b, h, :n].double().cpu()
            for g in range(G):
                s = keys @ q[b, h, g].double().cpu() * scale
                w = torch.exp(s - s.max())
                out[b, h, g] = (w[:, None] * values).sum(0) / w.sum()
    return out


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, HALF])
@pytest.mark.parametrize("shape", [(3, 2, 2, 16), (2, 3, 3, 64), (4, 1, 4, 32), (2, 2, 1, 128)])
@pytest.mark.parametrize("n_splits", [1, 3])
def test_kernel_equals_a_brute_force_softmax(shape, dtype, n_splits, monkeypatch):
    B, n_kv, G, D = shape
    torch.manual_seed(B * 100 + D)
    cap = 320
    # more slots than rows, filled with garbage past every row's position: the kernel must read
    # only rows 0..B-1 and positions 0..position
    k = torch.randn(B + 2, n_kv, cap, D, device=DEVICE).to(dtype)
    v = torch.randn_like(k)
    q = torch.randn(B, n_kv, G, D, device=DEVICE).to(dtype)
    positions = torch.randint(1, 260, (B,), device=DEVICE)
    positions[0] = 0                       # a row that sees only its own first key
    for b in range(B):
        k[b, :, int(positions[b]) + 1:] = 1e4
        v[b, :, int(positions[b]) + 1:] = float("nan")
    span = int(positions.max()) + 1
    monkeypatch.setattr(decode_attention, "splits", lambda *a: n_splits)   # some splits see no keys
    got = decode_attention.over_cache(q, k, v, positions, span, 1 / math.sqrt(D))
    assert got.shape == (B, n_kv, G, D) and got.dtype == dtype
    want = brute_force(q, k, v, positions, 1 / math.sqrt(D))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)


def test_cpu_decoding_never_takes_the_triton_kernels():
    model, _ = tiny_model("llama")
    dec = Decoder(model, 2)
    # the compiled CPU kernels where they build (tests/test_cpu_kernels.py), else torch's operations
    assert dec.kernels in ("cpu", "torch")
    assert (dec.attention, dec.layers.norm) == ("sdpa", rms_norm.module_norm)
    if not decode_attention.available():   # asked for by name without Triton: said, not a crash later
        with pytest.raises(ValueError, match="needs Triton"):
            Decoder(model, 2, kernels="triton")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, HALF])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_rms_norm_equals_the_model_s_own_module(arch, dtype):
    model, _ = tiny_model(arch, hidden=96)        # 96: not a power of two, so the tile is masked
    model = model.to(DEVICE, dtype)
    torch.manual_seed(0)
    attn = model.model.layers[0].self_attn
    modules = [(model.model.norm, 96), (model.model.layers[1].post_attention_layernorm, 96)]
    if arch == "qwen3":
        modules.append((attn.q_norm, attn.head_dim))
    for module in modules:
        module[0].weight.data.normal_(1.0, 0.3)   # a weight that is not all ones
    for module, width in modules:
        x = (torch.randn(7, 3, width, device=DEVICE) * 4).to(dtype)[:, 1:]   # strided rows
        got, want = rms_norm.rms_norm(module, x), module(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        tol = 2e-6 if dtype == torch.float32 else (2e-3 if dtype == torch.float16 else 1.6e-2)
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@needs_kernel
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_decoder_with_triton_kernels_equals_torch_kernels(arch):
    """The whole decode step, eager, with the Triton kernels against SDPA and the modules' norms."""
    model, tok = tiny_model(arch, seed=3)
    model = model.to(DEVICE)
    fast = Decoder(model, 6, cuda_graphs=False, kernels="triton", matmul="module")
    plain = Decoder(model, 6, cuda_graphs=False, kernels="torch", matmul="module")
    assert fast.attention == "triton" and fast.layers.norm is rms_norm.rms_norm
    prompts = [chat_ids(tok, p) for p in PROMPTS]
    for dec in (fast, plain):
        for slot, ids in enumerate(prompts):
            dec.cache.write_prefix(slot, dec.prefill(torch.tensor(ids, device=DEVICE)))
    pos = torch.tensor([len(ids) for ids in prompts], device=DEVICE)
    torch.manual_seed(2)
    for _ in range(12):
        x = torch.randn(len(prompts), model.config.hidden_size, device=DEVICE)
        torch.testing.assert_close(fast.decode(x, pos), plain.decode(x, pos), rtol=1e-4, atol=1e-4)
        pos += 1

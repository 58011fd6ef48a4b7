"""The compiled CPU decode kernels (strategies/cpu_kernels.cpp) against independent computations:
the transformers modules they stand in for, float64 softmax attention written out here, and the
decoder's tensor-operation step. Skipped where the kernels cannot be built (no C++ compiler)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from strategies import cpu_kernels
from strategies.attention import attend
from strategies.decoder import Decoder, default_kernels
from strategies.layers import rope, signed_sin
from strategies.sampler import raw_signals
from strategies.tiny import tiny_model

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="the CPU kernels cannot be built here")
K = torch.ops.tts_cpu if cpu_kernels.available() else None
DTYPES = [torch.float32, torch.bfloat16]


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Distance in units of the dtype's last place, per element."""
    eps = torch.finfo(want.dtype).eps
    scale = want.float().abs().clamp_min(torch.finfo(want.dtype).tiny / eps)
    return (got.float() - want.float()).abs() / (scale * eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("residual", [True, False])
def test_add_rms_norm_is_the_residual_add_then_transformers_rmsnorm(dtype, residual):
    g = torch.Generator().manual_seed(0)
    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(576, generator=g))
    norm = norm.to(dtype)
    h = (torch.randn(37, 576, generator=g) * 3).to(dtype)
    y = torch.randn(37, 576, generator=g).to(dtype) if residual else None
    with torch.inference_mode():
        h_out, x = K.add_rms_norm(h, y, norm.weight, norm.variance_epsilon)
        want_h = h + y if residual else h
        want_x = norm(want_h)
    assert torch.equal(h_out, want_h)   # the add rounds exactly as the modules' add
    # the mean of squares is a float32 sum in another order: a bfloat16 result at most one unit
    # in its last place off, a float32 one a few (the statistic's rounding, times x, times w)
    assert _ulps(x, want_x).max() <= (1.01 if dtype == torch.bfloat16 else 4)
    assert (x == want_x).float().mean() > (0.95 if dtype == torch.bfloat16 else 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_head_rms_norm_is_qwen3s_per_head_norm(dtype):
    g = torch.Generator().manual_seed(1)
    norm = LlamaRMSNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=g))
    norm = norm.to(dtype)
    qkv = torch.randn(5, 12, 64, generator=g).to(dtype)
    q = qkv[:, :8]                    # a strided view, as the decoder passes it
    with torch.inference_mode():
        got, want = K.head_rms_norm(q, norm.weight, norm.variance_epsilon), norm(q)
    assert _ulps(got, want).max() <= (1.01 if dtype == torch.bfloat16 else 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_kv_rotates_bit_for_bit_and_writes_the_cache(dtype):
    g = torch.Generator().manual_seed(2)
    N, nq, nk, hd, cap = 4, 6, 2, 32, 40
    qkv = torch.randn(N, nq + 2 * nk, hd, generator=g).to(dtype)
    q, k, v = qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:]
    angle = torch.randn(N, hd, generator=g)
    cos, sin = angle.cos().to(dtype), signed_sin(angle.sin()).to(dtype)
    kc, vc = torch.zeros(6, nk, cap, hd, dtype=dtype), torch.zeros(6, nk, cap, hd, dtype=dtype)
    positions = torch.tensor([0, 7, 39, 3])
    with torch.inference_mode():
        out = K.rope_kv(q, k, v, cos, sin, kc, vc, positions)
        c4, s4 = cos[:, None], sin[:, None]
        assert torch.equal(out, rope(q, c4, s4))
        want_k = rope(k, c4, s4)
    for n, p in enumerate(positions.tolist()):
        assert torch.equal(kc[n, :, p], want_k[n]) and torch.equal(vc[n, :, p], v[n])
        kc[n, :, p] = 0
        vc[n, :, p] = 0
    assert not kc.any() and not vc.any()   # nothing written anywhere else


def _reference(q, keys, values, scale):
    """float64 softmax(q kᵀ · scale) v for one row's query heads [G, hd] against keys [P, hd]."""
    s = (q.double() @ keys.double().T) * scale
    return torch.softmax(s, -1) @ values.double()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hd,group", [(64, 3), (128, 2), (16, 2), (48, 1)])
def test_attention_over_each_rows_own_keys_is_float64_softmax(dtype, hd, group):
    # hd 64 / 128 take the vector path (bf16 dot products), 16 and 48 the portable one
    g = torch.Generator().manual_seed(3)
    B, nk, cap = 5, 2, 70
    q = torch.randn(B, nk * group, hd, generator=g).to(dtype)
    kc = torch.randn(B + 1, nk, cap, hd, generator=g).to(dtype)
    vc = torch.randn(B + 1, nk, cap, hd, generator=g).to(dtype)
    positions = torch.tensor([0, 15, 16, 33, 69])
    start = torch.tensor([0, 0, 3, 10, 0])
    scale = hd ** -0.5
    with torch.inference_mode():
        out = K.attention(q, kc, vc, positions, start, None, None, None, scale).view(B, nk * group, hd)
    tol = 1e-5 if dtype == torch.float32 else 1.6e-2   # bf16: its dot products and one rounding
    for b in range(B):
        for h in range(nk):
            lo, hi = int(start[b]), int(positions[b]) + 1
            want = _reference(q[b, h * group:(h + 1) * group], kc[b, h, lo:hi], vc[b, h, lo:hi], scale)
            torch.testing.assert_close(out[b, h * group:(h + 1) * group].double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_merges_a_shared_prompt_block_exactly(dtype):
    """Rows of two prompts (one padded shorter): the prompt part as the decoder computes it (one
    SDPA block per prompt) merged with each row's own keys = float64 attention over both."""
    g = torch.Generator().manual_seed(4)
    nk, group, hd, cap, L = 3, 3, 64, 40, 23
    rows = [[0, 2, 3], [1]]                      # batch rows of prompt 0 and prompt 1
    lengths = [L, 11]
    B, n = 4, 3
    pk = torch.randn(2, nk, L, hd, generator=g).to(dtype)
    pv = torch.randn(2, nk, L, hd, generator=g).to(dtype)
    mask = torch.zeros(2, 1, 1, L, dtype=dtype)
    mask[1, ..., lengths[1]:] = float("-inf")
    q = torch.randn(B, nk * group, hd, generator=g).to(dtype)
    kc = torch.randn(B, nk, cap, hd, generator=g).to(dtype)
    vc = torch.randn(B, nk, cap, hd, generator=g).to(dtype)
    start = torch.tensor([lengths[0], lengths[1], lengths[0], lengths[0]])
    positions = start + torch.tensor([0, 5, 16, 2])
    idx = [0, 2, 3, 1, 0, 0]                       # block place -> batch row (padding reads row 0)
    inv = torch.tensor([0, 3, 1, 2])
    scale = hd ** -0.5
    with torch.inference_mode():
        qb = q[idx].view(2, n, nk, group, hd).transpose(1, 2).reshape(2, nk, n * group, hd)
        o_pre, lse = attend(qb, pk, pv, mask, scale)
        out = K.attention(q, kc, vc, positions, start, o_pre, lse, inv, scale).view(B, nk * group, hd)
    tol = 1e-5 if dtype == torch.float32 else 1.6e-2
    for j, rs in enumerate(rows):
        for b in rs:
            for h in range(nk):
                keys = torch.cat([pk[j, h, :lengths[j]], kc[b, h, int(start[b]):int(positions[b]) + 1]])
                vals = torch.cat([pv[j, h, :lengths[j]], vc[b, h, int(start[b]):int(positions[b]) + 1]])
                want = _reference(q[b, h * group:(h + 1) * group], keys, vals, scale)
                torch.testing.assert_close(out[b, h * group:(h + 1) * group].double(), want, atol=tol, rtol=tol)


def test_attention_refuses_positions_outside_the_cache():
    q = torch.randn(1, 2, 16)
    kc = torch.zeros(1, 1, 8, 16)
    with pytest.raises(RuntimeError, match="outside the cache"):
        K.attention(q, kc, kc.clone(), torch.tensor([8]), torch.tensor([0]), None, None, None, 0.25)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_is_the_modules_act_times_up(dtype):
    g = torch.Generator().manual_seed(5)
    gu = (torch.randn(9, 2 * 1000, generator=g) * 4).to(dtype)   # 1000: a tail past the vector width
    gu[0, :8] = torch.tensor([0.0, -0.0, 90.0, -90.0, 1e-3, -1e-3, 20.0, -20.0])
    with torch.inference_mode():
        got = K.silu_mul(gu)
        gate, up = gu.chunk(2, dim=-1)
        want = F.silu(gate) * up
    # exp is a polynomial here (torch uses Sleef): the activation within a unit or two of the
    # dtype's last place, so the product within that times |up|
    eps = torch.finfo(dtype).eps
    bound = 2 * eps * (want.float().abs() + up.float().abs() * 1e-2)
    assert ((got.float() - want.float()).abs() <= bound).all()
    assert (got == want).float().mean() > (0.97 if dtype == torch.bfloat16 else 0.5)


def _steps(model, kernels, share, steps=5, B=5):
    dec = Decoder(model, 8, kernels=kernels)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 200, (10,), generator=g)
    prefix = dec.prefill(ids[:-1])
    dec.cache.ensure_capacity(64)
    shared = dec.share([prefix], [list(range(B))], B) if share else None
    if not share:
        for b in range(B):
            dec.cache.write_prefix(b, prefix)
    pos = torch.full((B,), 9, dtype=torch.long)
    x = dec.embed_tokens(ids[-1:].repeat(B))
    out = []
    for _ in range(steps):
        out.append(dec.decode(x, pos, shared).clone())
        x = dec.embed_tokens(torch.randint(0, 200, (B,), generator=g))
        pos = pos + 1
    dec.unshare()
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("share", [False, True])
def test_decoder_step_with_the_kernels_matches_the_tensor_op_step(arch, share):
    """Five decode steps (a prompt in each row's slot, or shared), head_dim 64 so attention takes
    the vector path: float32 logits agree to float32 rounding; in bfloat16 both steps are
    compared with the float32 model, and the kernels' error is no larger than the other's."""
    model, _ = tiny_model(arch, layers=2, hidden=256)
    want = _steps(model, "torch", share)
    assert Decoder(model, 2).kernels == "cpu"   # the CPU default where the kernels build
    torch.testing.assert_close(_steps(model, "cpu", share), want, atol=1e-4, rtol=1e-4)
    model = tiny_model(arch, layers=2, hidden=256)[0].to(torch.bfloat16)   # fresh: packs are per model
    err_cpu = (_steps(model, "cpu", share) - want).abs().mean()
    err_torch = (_steps(model, "torch", share) - want).abs().mean()
    assert err_cpu <= 1.25 * err_torch


def test_default_kernels_fall_back_to_torch_operations(monkeypatch):
    model, _ = tiny_model("llama")
    assert default_kernels(model) == "cpu"
    assert default_kernels(model, compile=True) == "torch"       # inductor fuses the ops itself
    assert default_kernels(model, matmul="weight_major") == "torch"   # no joint products
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    assert default_kernels(model) == "torch"
    with pytest.raises(ValueError, match="kernels='cpu'"):
        Decoder(model, 2, kernels="cpu")


def test_a_failed_build_is_reported_and_leaves_the_tensor_op_step(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("TTS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(cpu_kernels, "SOURCE", tmp_path / "changed.cpp")   # a key with no cached build
    (tmp_path / "changed.cpp").write_text("int x;\n")
    available = cpu_kernels.available.__wrapped__
    assert available() is False
    assert "CPU decode kernels unavailable" in capfd.readouterr().err


def test_signals_are_the_samplers_formulas(monkeypatch):
    """One pass per row against the tensor-operation formulas (sampler.raw_signals without the
    kernel) and a float64 computation: padded vocabulary columns ignored, -inf logits (zero
    probability) adding nothing, a tail past the vector width, ties in the top k."""
    g = torch.Generator().manual_seed(6)
    V = 1003
    logits = torch.randn(6, V + 13, generator=g) * 4
    logits[1, 5:400] = float("-inf")
    logits[2, :30] = 7.0                          # 30 tied maxima: the top 20 are all 0
    logits[:, V:] = 1e4                           # padding past the vocabulary: never read
    got = raw_signals(logits, V)
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    want = raw_signals(logits, V)
    assert torch.equal(got.shifted, want.shifted)   # the same subtraction
    for name in ("log_norm", "entropy", "self_certainty", "confidence"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=2e-5, rtol=2e-6)
    lp = torch.log_softmax(logits[:, :V].double(), -1)
    p = lp.exp()
    entropy = -(p * lp.nan_to_num(neginf=0.0)).sum(-1)
    confidence = -lp.topk(20, -1).values.mean(-1)
    torch.testing.assert_close(got.entropy.double(), entropy, atol=2e-5, rtol=0)
    torch.testing.assert_close(got.confidence.double(), confidence, atol=2e-5, rtol=0)
    assert got.self_certainty[1] == float("inf")    # mean log p is -inf with -inf logits, as torch says

"""Where a CPU decode step's time goes, part by part: the step of `Decoder._step` with prefix
sharing (one prompt's rows), each part timed on its own, then the signals and the draw.

    python -m benchmarks.step_parts [MODEL] [--dtype bfloat16] [--rows 32] [--prompt 150] [--own 64]
        [--kernels auto|cpu|torch]

Prints one JSON object: milliseconds per step for each part (averaged over --steps steps after a
warm-up) and the whole step. The parts are the decoder's own calls in its order, so their sum is
the step less the timer's own cost. With the tensor-operation step (`--kernels torch`): norms,
the q/k/v, o, gate/up and down products with their residual adds, RoPE, the cache write,
attention over each row's own tokens, the prompt's shared attention and the merge, the LM head.
With the compiled kernels (`cpu`, the CPU default): residual + norm, the four products, RoPE with
the cache write, the prompt's block attention, each row's own attention with the merge, SiLU × up,
the LM head. `tests/test_benchmarks_step_parts.py` runs it on the tiny model
against `Decoder.decode`, so it cannot drift from the real step.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import orjson
import torch

from strategies import attention
from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.layers import rope
from strategies.models import load
from strategies.sampler import raw_signals


class Parts:
    """Seconds spent in each named part, summed over calls."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def __call__(self, name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.seconds[name] += time.perf_counter() - t
        return out


@torch.inference_mode()
def step(dec, x, positions, shared, T: Parts) -> torch.Tensor:
    """The decoder's step with each part timed (CPU, prefix sharing, joint q/k/v)."""
    return (step_kernels if dec.kernels == "cpu" else step_ops)(dec, x, positions, shared, T)


def step_kernels(dec, x, positions, shared, T: Parts) -> torch.Tensor:
    """Decoder._step_cpu with each part timed."""
    L, cache, B, K = dec.layers, dec.cache, x.shape[0], torch.ops.tts_cpu
    cos, sin = (t.reshape(B, -1) for t in L.rotation(x, positions))
    nq, nk = L.n_heads, L.n_kv
    h, residual = x, None
    for i, layer in enumerate(L.layers):
        m, n_in, n_post = dec.mats[i], layer.input_layernorm, layer.post_attention_layernorm
        h, xn = T("residual + norm", K.add_rms_norm, h, residual, n_in.weight, n_in.variance_epsilon)
        qkv = T("q/k/v product", m.qkv_joint, xn).view(B, -1, L.head_dim)
        q = T("rope + cache write", K.rope_kv, qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:], cos, sin,
              cache.k[i], cache.v[i], positions)
        o_pre, lse = T("attention, shared prompt", shared.prompt_block, i, q.view(B, nk, nq // nk, L.head_dim),
                       L.scaling)
        o = T("attention, own tokens + merge", K.attention, q, cache.k[i], cache.v[i], positions, shared.start,
              o_pre, lse, shared.inv, L.scaling)
        h, xn = T("residual + norm", K.add_rms_norm, h, T("o product", m.o, o), n_post.weight, n_post.variance_epsilon)
        gu = T("gate/up product", m.gate_up_joint, xn)
        residual = T("down product", m.down, T("silu * up", K.silu_mul, gu))
    _, xn = T("residual + norm", K.add_rms_norm, h, residual, dec.norm.weight, dec.norm.variance_epsilon)
    return T("LM head", lambda: dec.head(xn).float())


def step_ops(dec, x, positions, shared, T: Parts) -> torch.Tensor:
    """Decoder._step with each part timed."""
    L, cache, B = dec.layers, dec.cache, x.shape[0]
    span, lo = int(positions.max()) + 1, shared.lo
    cos, sin = L.rotation(x, positions)
    flat = cache.flat_index(positions)
    mask = attention.position_mask(positions, lo, span, dec.dtype, shared.start)
    h = x
    for i, layer in enumerate(L.layers):
        m = dec.mats[i]
        qkv = T("q/k/v product", m.qkv_joint, T("norms", L.norm, layer.input_layernorm, h)).view(B, -1, 1, L.head_dim)
        nq, nk = L.n_heads, L.n_kv
        qk = T("rope", rope, qkv[:, : nq + nk], cos, sin)
        q, k, v = qk[:, :nq], qk[:, nq:], qkv[:, nq + nk:]
        T("cache write", cache.write, i, flat, k, v)
        qg = q.view(B, nk, nq // nk, L.head_dim)
        ks, vs = cache.rows(i, B, lo, span)
        o, lse = T("attention, own tokens", attention.attend, qg, ks, vs, mask, L.scaling)
        o = T("attention, shared prompt + merge", shared.merge, i, qg, o, lse, L.scaling)
        h = T("o product + residual", lambda: h + m.o(o.reshape(B, -1)))
        gate, up = T("gate/up product", m.gate_up, T("norms", L.norm, layer.post_attention_layernorm, h))
        a = T("silu * up", lambda: layer.mlp.act_fn(gate) * up)
        h = T("down product + residual", lambda: h + m.down(a))
    return T("LM head", lambda: dec.head(L.norm(dec.norm, h)).float())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=150, help="prompt tokens (shared by the rows)")
    ap.add_argument("--own", type=int, default=64, help="tokens each row has generated so far")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--kernels", default="auto", choices=["auto", "cpu", "torch"], help="the decoder's step (see Decoder)")
    a = ap.parse_args()
    print(orjson.dumps(measure(a.model, a.dtype, a.rows, a.prompt, a.own, a.steps, a.kernels)).decode())


def measure(model: str, dtype: str, rows: int, prompt: int, own: int, steps: int, kernels: str = "auto") -> dict:
    loaded = load(model, "cpu", dtype)
    eng = Engine(loaded.model, loaded.tokenizer, Discrete(DiscreteParams(temperature=0.7)), batch_size=rows,
                 max_new_tokens=own + steps + 8, ignore_eos=True, kernels=kernels)
    dec = eng.decoder
    if dec.mats[0].qkv_joint is None or dec.layers.qk_norm:
        raise SystemExit("step_parts times the packed CPU step of a model without q/k norms")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(loaded.tokenizer), (prompt,), generator=g).tolist()
    active: list = []
    for row in eng.admit(Request(key=0, prompt_ids=ids, n=rows)):
        eng.place(row, active)
    for r in active:
        r.pos += own   # as if `own` tokens were generated (their cache entries are the slot's zeros)
    positions = torch.tensor([r.pos for r in active])
    x = eng._inputs(active)
    T = Parts()
    for i in range(steps + 3):
        if i == 3:
            T.seconds.clear()
            t0 = time.perf_counter()
        shared = T("prefix-sharing setup", eng._shared, active)
        logits = step(dec, x, positions, shared, T)
        sig = T("signals", raw_signals, logits, logits.shape[1])
        T("sampling", eng.generator.choose, active, logits, sig)
    whole = (time.perf_counter() - t0) / steps * 1e3
    parts = {k: round(v / steps * 1e3, 2) for k, v in sorted(T.seconds.items(), key=lambda kv: -kv[1])}
    return {"model": model, "dtype": str(dec.dtype).removeprefix("torch."), "kernels": dec.kernels, "rows": rows, "prompt": prompt,
            "own": own, "threads": torch.get_num_threads(), "step_ms": round(whole, 2), "parts_ms": parts}


if __name__ == "__main__":
    main()

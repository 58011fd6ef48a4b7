"""The decode step's own-positions attention alone, on one layer's cache of a model's shape: on
CUDA the Triton kernel (decode_attention.py) at a few tile settings, on CPU the compiled kernel
(cpu_kernels.cpp: attention), each against SDPA over the masked span.

    python -m benchmarks.decode_attention [--device cuda|cpu] [--rows 64 256] [--position 300 1000]
        [--kv-heads 8] [--group 2] [--head-dim 128] [--dtype bfloat16]

Prints one JSON line per (rows, position): each variant's microseconds per call, the bytes of
keys and values the rows must read over that time, and the largest difference from a float32
reference.
"""
from __future__ import annotations

import argparse

import time

import orjson
import torch

from benchmarks.step_profile import copy_bandwidth
from strategies import attention, cpu_kernels, decode_attention
from strategies.cuda_graphs import graph_span

CONFIGS = [(64, 4, 2), (32, 4, 2), (64, 4, 3), (128, 8, 2), (32, 2, 2)]   # (BLOCK_N, warps, stages)


def _us(fn, device: str, reps: int = 100) -> float:
    if device == "cpu":
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e6
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--position", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--group", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a = ap.parse_args()
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    cpu = a.device == "cpu"
    if cpu and not cpu_kernels.available():
        raise SystemExit("the CPU kernels cannot be built here (see strategies/cpu_kernels.py)")
    bw = copy_bandwidth(a.device)
    D, nkv, G = a.head_dim, a.kv_heads, a.group
    for P in a.position:
        for B in a.rows:
            torch.manual_seed(0)
            cap = -(-(P + 1) // 64) * 64 + 64
            k = torch.randn(B, nkv, cap, D, dtype=dtype, device=dev)
            v = torch.randn_like(k)
            q = torch.randn(B, nkv, G, D, dtype=dtype, device=dev)
            pos = torch.full((B,), P, device=dev)
            span = P + 1 if cpu else graph_span(P + 1, 1 << 30)   # on CUDA, the span a captured step attends over
            mask = attention.position_mask(pos, 0, span, dtype)
            ref, _ = attention.attend_reference(q.float(), k[:, :, :span].float(), v[:, :, :span].float(),
                                                mask.float(), D ** -0.5)
            need = 2 * B * nkv * (P + 1) * D * dtype.itemsize
            out = {"rows": B, "position": P, "span": span, "kv_bytes": need, "copy_bw_tb_s": round(bw / 1e12, 3)}

            def report(name, fn):
                err = (fn().float() - ref).abs().max().item()
                us = _us(fn, a.device)
                out[name] = {"us": round(us, 1), "tb_s": round(need / us / 1e6, 3), "max_err": round(err, 5)}

            report("sdpa", lambda: attention.over_cache(q, k[:, :, :span], v[:, :, :span], mask, D ** -0.5))
            if cpu:
                start = torch.zeros_like(pos)
                report("cpu_kernels", lambda: torch.ops.tts_cpu.attention(
                    q.reshape(B, nkv * G, D), k, v, pos, start, None, None, None, D ** -0.5).view(B, nkv, G, D))
                print(orjson.dumps(out).decode(), flush=True)
                continue
            for bn, warps, stages in CONFIGS:
                decode_attention.BLOCK_N, decode_attention.NUM_WARPS, decode_attention.NUM_STAGES = bn, warps, stages
                report(f"triton_{bn}_{warps}_{stages}",
                       lambda: decode_attention.over_cache(q, k, v, pos, span, D ** -0.5))
            print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()

"""Where a decode step's time goes: the model step (CUDA graph or eager) and the sampling stage.

    python -m benchmarks.step_profile MODEL [--device cuda] [--rows 16 64] [--position 300]

Prints one JSON line per row count with milliseconds per step for: the decode step run eagerly,
replayed from a CUDA graph (CUDA only), each also with --compile, and signals + sampling on its
logits.
"""
from __future__ import annotations

import argparse
import time

import orjson
import torch


def _ms(fn, device: str, reps: int) -> float:
    fn()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def _kernels(fn) -> int:
    """GPU kernels and copies one call launches (the profiler's device-side events); -1 if the
    profiler cannot say."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    except Exception:
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--position", type=int, default=300)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd step")
    a = ap.parse_args()
    from strategies.decoder import Decoder
    from strategies.generators.discrete import DiscreteParams
    from strategies.sampler import SamplingParams, raw_signals, sample
    from tts_cli.models import load

    loaded = load(a.model, a.device, a.dtype)
    model, dev = loaded.model, str(loaded.model.device)
    V = len(loaded.tokenizer)
    for B in a.rows:
        torch.manual_seed(0)
        prompt = torch.randint(0, V, (a.position,), device=dev)
        x = model.get_input_embeddings().weight[torch.randint(0, V, (B,), device=dev)]
        pos = torch.full((B,), a.position, device=dev)
        out = {"rows": B, "position": a.position, "device": dev, "dtype": str(model.dtype)}
        variants = [("eager", False, False)]
        if dev.startswith("cuda"):
            variants.append(("graph", True, False))
        if a.compile:
            variants += [(name + "_compiled", graphs, True) for name, graphs, _ in variants]
        for name, graphs, compiled in variants:
            dec = Decoder(model, B, cuda_graphs=graphs, compile=compiled)
            prefix = dec.prefill(prompt)
            for slot in range(B):
                dec.write_prefix(slot, prefix)
            out[f"decode_{name}_ms"] = round(_ms(lambda: dec.decode(x, pos, span=a.position + 1), dev, a.reps), 3)
            if dev.startswith("cuda") and not graphs:
                out[f"decode_{name}_kernels"] = _kernels(lambda: dec.decode(x, pos, span=a.position + 1))
        logits = dec.decode(x, pos, span=a.position + 1)[:, :V]
        sp = SamplingParams.stack([DiscreteParams(temperature=0.7).row()] * B, dev)
        u = torch.rand(B, dtype=torch.float64, device=dev)

        def sampling():
            sig = raw_signals(logits, V)
            toks = sample(logits, sp, u)
            torch.stack([sig.logprob(toks), sig.entropy, sig.self_certainty, sig.confidence]).tolist()
            toks.tolist()

        out["signals_and_sampling_ms"] = round(_ms(sampling, dev, a.reps), 3)
        print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()

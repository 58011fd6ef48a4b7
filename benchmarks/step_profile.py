"""Where a decode step's time goes, timed through the engine's own stages (Engine.forward,
then choose → read_back → record → check_finish), over B rows of one random prompt.

    python -m benchmarks.step_profile MODEL [--device cuda] [--rows 16 64] [--position 300 1000]
        [--kernels auto torch] [--compile]

Prints one JSON line per row count with milliseconds per step for: the model's forward run
eagerly, replayed from a CUDA graph (CUDA only), each also with --compile, and the rest of the
step. On CUDA it also prints the step's minimum memory traffic (weights + keys/values read) over
the device-to-device copy bandwidth measured in the same run: the fraction of that limit reached.
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


def _top(fn, n: int, label: str) -> None:
    """Print (to stderr) the kernels with the most GPU time in one call of fn."""
    import sys

    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print(f"-- {label}", file=sys.stderr)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=n, max_name_column_width=60),
          file=sys.stderr)


def copy_bandwidth(device: str, gib: float = 2.0) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written (the usual figure)."""
    n = int(gib * (1 << 30))
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = _ms(lambda: dst.copy_(src), device, 10)
    return 2 * n / (ms / 1e3)


def step_bytes(model, rows: int, position: int) -> int:
    """Bytes a decode step must read at least: every weight once (the embedding table only for the
    rows' lookups unless tied to the LM head) plus each row's keys/values up to its position."""
    cfg = model.config
    elt = model.dtype.itemsize
    params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight
    if not cfg.tie_word_embeddings:
        params -= emb.numel()  # the input table: only `rows` of its rows are read
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * (position + 1) * rows
    return (params + kv) * elt + rows * emb.shape[1] * elt


def _roofline(model, rows: int, position: int, out: dict) -> dict:
    bw = copy_bandwidth(str(model.device))
    need = step_bytes(model, rows, position)
    res = {"step_bytes": need, "copy_bw_tb_s": round(bw / 1e12, 3), "limit_ms": round(need / bw * 1e3, 3)}
    for k, v in list(out.items()):
        if k.startswith("decode_") and k.endswith("_ms"):
            res[k.removesuffix("_ms") + "_of_limit"] = round(need / bw * 1e3 / v, 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--position", type=int, nargs="+", default=[300])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd step")
    ap.add_argument("--top", type=int, default=0, help="on CUDA, print the N kernels taking most of an eager step")
    ap.add_argument("--no-graphs", action="store_true", help="on CUDA, time only the eager step")
    ap.add_argument("--kernels", nargs="+", default=["auto"], choices=["auto", "torch", "triton", "cpu"],
                    help="the decoder's kernels to time (see Decoder; names after the first get a suffix)")
    a = ap.parse_args()
    from strategies.engine import Engine, Request
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.models import load

    loaded = load(a.model, a.device, a.dtype)
    model, dev = loaded.model, str(loaded.model.device)
    V = len(loaded.tokenizer)
    for B, position in [(B, P) for P in a.position for B in a.rows]:
        out = {"rows": B, "position": position, "device": dev, "dtype": str(model.dtype)}
        variants = [("eager", False, False)]
        if dev.startswith("cuda") and not a.no_graphs:
            variants.append(("graph", True, False))
        if a.compile:
            variants += [(name + "_compiled", graphs, True) for name, graphs, _ in variants]
        variants = [(name + ("" if i == 0 else f"_{attn}"), graphs, compiled, attn)
                    for i, attn in enumerate(a.kernels) for name, graphs, compiled in variants]
        for name, graphs, compiled, attn in variants:
            # the engine's own stages over B rows of one random prompt of `position` tokens
            eng = Engine(model, loaded.tokenizer, Discrete(DiscreteParams(temperature=0.7)), batch_size=B,
                         max_new_tokens=1 << 30, ignore_eos=True, cuda_graphs=graphs, compile=compiled,
                         share_prefix=False,  # per-row attention, as the graphs run it
                         kernels=attn)
            out.setdefault("kernels", eng.decoder.kernels)
            torch.manual_seed(0)
            prompt = torch.randint(0, V, (position + 1,)).tolist()
            active: list = []
            for row in eng.admit(Request(key=0, prompt_ids=prompt, n=B)):
                eng.place(row, active)
            forward = lambda: eng.forward(active)  # noqa: E731 (rewrites the same positions: repeatable)
            out[f"decode_{name}_ms"] = round(_ms(forward, dev, a.reps), 3)
            if dev.startswith("cuda") and not graphs:
                out[f"decode_{name}_kernels"] = _kernels(forward)
                if a.top and not compiled:
                    _top(forward, a.top, f"rows={B} {name}")
            if name == "eager":
                # the rest of a step: choose, the read-back, record, finish checks
                logits, sig = eng.forward(active)

                def rest():
                    host = eng.read_back(active, eng.generator.choose(active, logits, sig), sig)
                    eng.record(active, host)
                    eng.check_finish(active)

                out["rest_of_step_ms"] = round(_ms(rest, dev, a.reps), 3)
                out["full_step_eager_ms"] = round(_ms(lambda: eng.step(active), dev, 10), 3)
        if dev.startswith("cuda"):
            out.update(_roofline(model, B, position, out))
        print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()

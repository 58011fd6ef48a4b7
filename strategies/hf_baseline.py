"""The transformers `generate()` side of `tts bench`: three ways a user runs the same workload.

- `per_prompt`: one `generate(num_return_sequences=n)` call per prompt, what many users write;
- `batched`: every prompt's rows in one left-padded `generate()` call, what a careful user writes;
- `batched` with `static=True`: the same call with transformers' own fast path,
  `cache_implementation="static"`, which `generate()` compiles with `torch.compile` (CUDA graphs,
  mode "reduce-overhead") on CUDA. It is timed on CUDA only; elsewhere generate() would not compile.

Prompts arrive tokenised (tokenisation is outside every timer). With `warmup=True` the whole
workload runs once untimed first, as our sampler does when it captures graphs or compiles, so that
both sides start the timed pass equally warm. Tokens are counted per row up to and including its
first EOS, never the padding after it.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from strategies import linear
from strategies.models import eos_token_ids


@dataclass
class Timing:
    tokens: int
    seconds: float
    setup: float = 0.0   # an untimed first pass (CUDA graph capture, torch.compile), seconds

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _settings(loaded, n: int, max_new: int, ignore_eos: bool, temperature: float) -> dict:
    kw = dict(max_new_tokens=max_new, do_sample=temperature > 0, num_return_sequences=n,
              pad_token_id=loaded.tokenizer.pad_token_id)
    if temperature > 0:
        kw.update(temperature=temperature, top_k=0, top_p=1.0)
    if ignore_eos:
        kw["min_new_tokens"] = max_new
    return kw


def _count(rows: list[list[int]], eos: set, ignore_eos: bool) -> int:
    if ignore_eos:
        return sum(len(r) for r in rows)
    return sum(next((j + 1 for j, t in enumerate(r) if t in eos), len(r)) for r in rows)


def _left_padded(ids: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    inp = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return inp, mask


def _timed(run, model, warmup: bool) -> Timing:
    """Time run() -> tokens; with warmup, a first untimed pass. Seeded before each pass:
    generate() draws from torch's global generator, and since it decodes until the longest row
    ends, its token count (and with it its tokens/s) repeats only if its samples do. The weights
    our packed decoder released (linear.py) come back before the timer, not inside it."""
    linear.restore_model(model)
    device = model.device
    setup = 0.0
    for timed in ([False, True] if warmup else [True]):
        torch.manual_seed(0)
        sync(device)
        t0 = time.perf_counter()
        tokens = run()
        sync(device)
        elapsed = time.perf_counter() - t0
        if not timed:
            setup = elapsed
    return Timing(tokens, elapsed, setup)


def per_prompt(loaded, ids: list[list[int]], n: int, max_new: int, ignore_eos: bool, temperature: float,
               warmup: bool = False) -> Timing:
    """One generate(num_return_sequences=n) call per prompt."""
    model = loaded.model
    kw, eos = _settings(loaded, n, max_new, ignore_eos, temperature), eos_token_ids(model.generation_config)
    inputs = [torch.tensor([x], device=model.device) for x in ids]

    def run() -> int:
        tokens = 0
        for inp in inputs:
            with torch.inference_mode():
                out = model.generate(inp, attention_mask=torch.ones_like(inp), **kw)
            tokens += _count(out[:, inp.shape[1]:].tolist(), eos, ignore_eos)
        return tokens

    return _timed(run, model, warmup)


def batched(loaded, ids: list[list[int]], n: int, max_new: int, ignore_eos: bool, temperature: float,
            warmup: bool = False, static: bool = False) -> Timing:
    """All prompts' rows in one left-padded generate() call; `static`: transformers' static
    KV cache, which generate() compiles on CUDA (its documented fast path)."""
    model = loaded.model
    kw, eos = _settings(loaded, n, max_new, ignore_eos, temperature), eos_token_ids(model.generation_config)
    if static:
        kw["cache_implementation"] = "static"
    pad = loaded.tokenizer.pad_token_id
    inp, mask = _left_padded(ids, pad if pad is not None else next(iter(eos)), model.device)

    # generate() runs under torch.no_grad itself; the static path is left exactly as transformers
    # documents it (no inference_mode around a compiled forward and its cache).
    grad_off = contextlib.nullcontext if static else torch.inference_mode

    def run() -> int:
        with grad_off():
            out = model.generate(inp, attention_mask=mask, **kw)
        return _count(out[:, inp.shape[1]:].tolist(), eos, ignore_eos)

    return _timed(run, model, warmup)

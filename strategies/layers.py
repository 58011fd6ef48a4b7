"""One decoder layer, written once for prefill (a prompt's tokens as rows) and decode (one token
per batch row): h [N, D] in, h [N, D] out, attention supplied by the caller.

The weights, norms, activations and rotary embeddings are the Hugging Face model's own modules, so
every supported architecture computes what transformers computes; only the order of the matrix
products and attention are ours. This reaches below transformers' public API (the layers'
submodules and the rotary module): pyproject.toml bounds the tested transformers versions.
"""
from __future__ import annotations

import torch

from strategies import linear, rms_norm
from strategies.linear import Mats

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


class UnsupportedModel(Exception):
    pass


def sliding_window(config) -> int | None:
    """The attention window some of the model's layers use, if any. The decoder does not apply
    one: sequences longer than it are refused (see window_error), not silently computed with
    full attention. Up to the window's length, windowed and full attention are identical."""
    w = getattr(config, "sliding_window", None)
    if not w:
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:   # transformers 5 names each layer's kind
        return int(w) if "sliding_attention" in types else None
    if config.model_type == "mistral":
        return int(w)
    return int(w) if getattr(config, "use_sliding_window", False) else None


def window_error(config, prompt_tokens: int, max_new_tokens: int) -> str | None:
    """Why a prompt plus its generation cannot run on this model, or None."""
    w = sliding_window(config)
    if w is not None and prompt_tokens + max_new_tokens > w:
        return (f"prompt ({prompt_tokens} tokens) + --max-new-tokens ({max_new_tokens}) exceeds the model's "
                f"sliding attention window of {w} tokens, which tts does not apply; lower --max-new-tokens "
                f"or shorten the prompt")
    return None


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated, so that rope needs no negation of x (see rope)."""
    h = sin.shape[-1] // 2
    return torch.cat((-sin[..., :h], sin[..., h:]), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin_s: torch.Tensor) -> torch.Tensor:
    """transformers' x·cos + rotate_half(x)·sin, bit for bit: rotate_half(x) = (-x₂, x₁) is the
    halves swapped (a roll) with the first negated, and (-a)·b = a·(-b) exactly in floating point,
    so the sign moves onto `sin_s` = signed_sin(sin), computed once per step, not per layer."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin_s


class Layers:
    """The model's layers as two halves around attention, over rows of hidden states."""

    def __init__(self, model, fused_norms: bool = False):
        cfg = model.config
        if cfg.model_type not in SUPPORTED:
            raise UnsupportedModel(
                f"model type {cfg.model_type!r} is not supported by the sampler (supported: {', '.join(SUPPORTED)})")
        self.layers = list(model.model.layers)
        self.rotary = model.model.rotary_emb
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.scaling = attn.scaling
        self.qk_norm = hasattr(attn, "q_norm")
        # norm(module, x): the module itself, or the same formula as one Triton kernel (GPU)
        self.norm = rms_norm.rms_norm if fused_norms else rms_norm.module_norm

    def __len__(self) -> int:
        return len(self.layers)

    def rotation(self, h: torch.Tensor, positions: torch.Tensor):
        """cos and signed sin (see rope) [N, 1, 1, head_dim] for rows at `positions` [N] (broadcast
        over heads)."""
        cos, sin = self.rotary(h[:, None, :], positions[:, None])
        return cos[:, None], signed_sin(sin[:, None])

    def mats(self, kind: str, release: bool = False) -> list[Mats]:
        """Each layer's matrix products in one of linear.py's forms: module, weight_major, fused,
        packed. The unpacked forms read the modules' weights, so any a packed decoder released
        come back first; `release` (packed only) drops each layer's dense weights as soon as that
        layer is packed, so the process never holds more than one layer twice."""
        out = []
        for layer in self.layers:
            if kind != "packed":
                linear.restore(layer)
            out.append(linear.MATS[kind](layer))
            if release and kind == "packed":
                linear.release(layer)
        return out

    def pre_attention(self, layer, h, cos, sin, mats: Mats | None = None):
        """Norm, projections, q/k norms and rotary: q [N, heads, 1, hd], k and v [N, kv_heads, 1, hd].
        `mats` are this layer's products (default: its own modules)."""
        attn, hd, N = layer.self_attn, self.head_dim, h.shape[0]
        mats = mats or linear.module_mats(layer)
        x = self.norm(layer.input_layernorm, h)
        if mats.qkv_joint is not None and not self.qk_norm:
            # q, k and v come out side by side: q and k rotate in one pass (one set of kernels
            # per layer, not two), and q and k are views of its output
            qkv = mats.qkv_joint(x).view(N, -1, 1, hd)
            nq, nk = self.n_heads, self.n_kv
            qk = rope(qkv[:, : nq + nk], cos, sin)
            return qk[:, :nq], qk[:, nq:], qkv[:, nq + nk:]
        q, k, v = mats.qkv(x)
        q, k, v = q.reshape(N, -1, 1, hd), k.reshape(N, -1, 1, hd), v.reshape(N, -1, 1, hd)
        if self.qk_norm:
            q, k = self.norm(attn.q_norm, q), self.norm(attn.k_norm, k)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def post_attention(self, layer, h, o, mats: Mats | None = None):
        """Output projection and residual, then the MLP block; o is [N, heads * hd]."""
        mats = mats or linear.module_mats(layer)
        h = h + mats.o(o.reshape(h.shape[0], -1))
        gate, up = mats.gate_up(self.norm(layer.post_attention_layernorm, h))
        return h + mats.down(layer.mlp.act_fn(gate) * up)

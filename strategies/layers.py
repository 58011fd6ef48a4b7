"""One decoder layer, written once for prefill (a prompt's tokens as rows) and decode (one token
per batch row): h [N, D] in, h [N, D] out, attention supplied by the caller.

The weights, norms, activations and rotary embeddings are the Hugging Face model's own modules, so
every supported architecture computes what transformers computes; only the order of the matrix
products and attention are ours. This reaches below transformers' public API (the layers'
submodules and the rotary module): pyproject.toml bounds the tested transformers versions.
"""
from __future__ import annotations

import torch

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


class UnsupportedModel(Exception):
    pass


def proj_weight_major(module: torch.nn.Linear, x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """module(x) for x [N, in], computed as (W xᵀ)ᵀ.

    On CPU, MKL runs this orientation 15–20% faster than x Wᵀ for the layer weights and ~40% faster
    for the 49k-row LM head at decode batch sizes (8–64 rows); see docs/performance.md. The result
    is a transposed view: elementwise ops and the next projection take it as it is, but queries
    are copied to row-major because SDPA's fused CPU kernel needs unit-stride heads.
    """
    y = (module.weight @ x.T).T
    if contiguous:
        y = y.contiguous()
    return y if module.bias is None else y + module.bias


def proj_plain(module: torch.nn.Linear, x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    return module(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Layers:
    """The model's layers as two halves around attention, over rows of hidden states."""

    def __init__(self, model):
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

    def __len__(self) -> int:
        return len(self.layers)

    def rotation(self, h: torch.Tensor, positions: torch.Tensor):
        """cos, sin [N, 1, 1, head_dim] for rows at `positions` [N] (broadcast over heads)."""
        cos, sin = self.rotary(h[:, None, :], positions[:, None])
        return cos[:, None], sin[:, None]

    def pre_attention(self, layer, h, cos, sin, proj=proj_plain):
        """Norm, projections, q/k norms and rotary: q [N, heads, 1, hd], k and v [N, kv_heads, 1, hd]."""
        attn, hd, N = layer.self_attn, self.head_dim, h.shape[0]
        a = layer.input_layernorm(h)
        q = proj(attn.q_proj, a, contiguous=True).reshape(N, -1, 1, hd)
        k = proj(attn.k_proj, a).reshape(N, -1, 1, hd)
        v = proj(attn.v_proj, a).reshape(N, -1, 1, hd)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def post_attention(self, layer, h, o, proj=proj_plain):
        """Output projection and residual, then the MLP block; o is [N, heads * hd]."""
        mlp = layer.mlp
        h = h + proj(layer.self_attn.o_proj, o.reshape(h.shape[0], -1))
        m = layer.post_attention_layernorm(h)
        return h + proj(mlp.down_proj, mlp.act_fn(proj(mlp.gate_proj, m)) * proj(mlp.up_proj, m))

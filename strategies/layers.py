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
        self.fused: list[tuple] = []   # per layer (W_qkv, b_qkv, W_gate_up) once fuse() ran

    @torch.no_grad()
    def fuse(self) -> None:
        """Store each layer's q/k/v and gate/up weights as one matrix each, so a step makes one
        product where it made three (and two): fewer, wider GEMMs, which a GPU runs closer to its
        bandwidth at decode batch sizes. The modules' own weights become views of the fused
        matrices, so nothing is stored twice and the model still works as a transformers model.
        CUDA only: on CPU, MKL's blocking could round a wider product differently."""
        for layer in self.layers:
            attn, mlp = layer.self_attn, layer.mlp
            done = getattr(layer, "_tts_fused", None)   # another decoder of this model fused it already
            if done is not None and attn.q_proj.weight.data_ptr() == done[0].data_ptr():
                self.fused.append(done)
                continue
            qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
            w_qkv = _fuse_weights(qkv)
            b_qkv = _fuse_biases(qkv)
            w_gu = _fuse_weights([mlp.gate_proj, mlp.up_proj])
            layer._tts_fused = (w_qkv, b_qkv, w_gu)
            self.fused.append(layer._tts_fused)

    def __len__(self) -> int:
        return len(self.layers)

    def rotation(self, h: torch.Tensor, positions: torch.Tensor):
        """cos, sin [N, 1, 1, head_dim] for rows at `positions` [N] (broadcast over heads)."""
        cos, sin = self.rotary(h[:, None, :], positions[:, None])
        return cos[:, None], sin[:, None]

    def pre_attention(self, layer, h, cos, sin, proj=proj_plain, fused=None):
        """Norm, projections, q/k norms and rotary: q [N, heads, 1, hd], k and v [N, kv_heads, 1, hd].
        `fused` is this layer's entry of `self.fused` (one product for q, k and v)."""
        attn, hd, N = layer.self_attn, self.head_dim, h.shape[0]
        a = layer.input_layernorm(h)
        if fused is not None:
            qkv = torch.nn.functional.linear(a, fused[0], fused[1])
            q, k, v = qkv.split([self.n_heads * hd, self.n_kv * hd, self.n_kv * hd], dim=-1)
            q, k, v = q.reshape(N, -1, 1, hd), k.reshape(N, -1, 1, hd), v.reshape(N, -1, 1, hd)
        else:
            q = proj(attn.q_proj, a, contiguous=True).reshape(N, -1, 1, hd)
            k = proj(attn.k_proj, a).reshape(N, -1, 1, hd)
            v = proj(attn.v_proj, a).reshape(N, -1, 1, hd)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def post_attention(self, layer, h, o, proj=proj_plain, fused=None):
        """Output projection and residual, then the MLP block; o is [N, heads * hd]."""
        mlp = layer.mlp
        h = h + proj(layer.self_attn.o_proj, o.reshape(h.shape[0], -1))
        m = layer.post_attention_layernorm(h)
        if fused is not None:
            gate, up = torch.nn.functional.linear(m, fused[2]).chunk(2, dim=-1)
            return h + proj(mlp.down_proj, mlp.act_fn(gate) * up)
        return h + proj(mlp.down_proj, mlp.act_fn(proj(mlp.gate_proj, m)) * proj(mlp.up_proj, m))


def _fuse_weights(modules) -> torch.Tensor:
    w = torch.cat([m.weight for m in modules])
    at = 0
    for m in modules:
        n = m.weight.shape[0]
        m.weight = torch.nn.Parameter(w[at: at + n], requires_grad=False)
        at += n
    return w


def _fuse_biases(modules) -> torch.Tensor | None:
    if all(m.bias is None for m in modules):
        return None
    b = torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.weight.shape[0]) for m in modules])
    at = 0
    for m in modules:
        n = m.weight.shape[0]
        if m.bias is not None:
            m.bias = torch.nn.Parameter(b[at: at + n], requires_grad=False)
        at += n
    return b

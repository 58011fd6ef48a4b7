"""A decoder-only transformer run over a preallocated, slot-indexed KV cache.

The weights, norms, MLPs and rotary embeddings are the Hugging Face model's own modules; only
attention and the cache are ours. That keeps every supported architecture (Llama, Qwen2, Qwen3,
Mistral and their derivatives) numerically what transformers computes, while the cache can do what
generate() cannot: share a prompt's prefill across its N rows, write in place, and move a row from
one slot to another when a neighbour finishes.

Cache layout: for each layer, keys and values of shape [slots, kv_heads, capacity, head_dim].
Active rows always occupy slots 0..B-1, so a decode step works on plain views, never a gather.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


class UnsupportedModel(Exception):
    pass


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Decoder:
    def __init__(self, model, max_slots: int):
        cfg = model.config
        if cfg.model_type not in SUPPORTED:
            raise UnsupportedModel(
                f"model type {cfg.model_type!r} is not supported by the sampler (supported: {', '.join(SUPPORTED)})")
        self.model = model
        self.cfg = cfg
        self.layers = list(model.model.layers)
        self.rotary = model.model.rotary_emb
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.embed = model.get_input_embeddings().weight
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.scaling = attn.scaling
        self.qk_norm = hasattr(attn, "q_norm")
        self.max_positions = int(getattr(cfg, "max_position_embeddings", 1 << 30))
        self.device = self.embed.device
        self.dtype = self.embed.dtype
        self.max_slots = max_slots
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    # ----- cache management -------------------------------------------------------------
    # All cache writes run in inference mode: the cache may have been (re)allocated inside a
    # decode step, and inference tensors cannot be updated in place outside it.
    @torch.inference_mode()
    def ensure_capacity(self, positions: int) -> None:
        """Grow every slot to hold `positions` tokens (amortised doubling, copy on growth)."""
        if positions <= self.capacity:
            return
        new = max(positions, 2 * self.capacity, 256)
        new = min(-(-new // 64) * 64, max(self.max_positions, positions))
        shape = (self.max_slots, self.n_kv, new, self.head_dim)
        for store in (self.k, self.v):
            grown = []
            for i in range(len(self.layers)):
                t = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if store:
                    t[:, :, : self.capacity] = store[i]
                grown.append(t)
            store[:] = grown
        self.capacity = new

    @torch.inference_mode()
    def write_prefix(self, slot: int, prefix: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy a prefilled prompt's keys/values ([kv_heads, L, head_dim] per layer) into a slot."""
        if not prefix:
            return
        n = prefix[0][0].shape[1]
        self.ensure_capacity(n + 1)
        for layer, (k, v) in enumerate(prefix):
            self.k[layer][slot, :, :n] = k
            self.v[layer][slot, :, :n] = v

    @torch.inference_mode()
    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Move a row's cache to another slot (keeps active rows in slots 0..B-1)."""
        for store in (self.k, self.v):
            for t in store:
                t[dst, :, :length] = t[src, :, :length]

    # ----- forward passes ---------------------------------------------------------------
    def embed_mixture(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Input embeddings Σ_k w_k E[i_k] for [B, K] ids and weights; K = 1, w = 1 is a token."""
        if ids.shape[1] == 1:
            return self.embed[ids[:, 0]] * weights[:, :1].to(self.dtype)
        return torch.einsum("bk,bkd->bd", weights.to(self.dtype), self.embed[ids])

    def _qkv(self, layer, x: torch.Tensor, cos, sin):
        attn = layer.self_attn
        B, T, _ = x.shape
        q = attn.q_proj(x).view(B, T, -1, self.head_dim)
        k = attn.k_proj(x).view(B, T, -1, self.head_dim)
        v = attn.v_proj(x).view(B, T, -1, self.head_dim)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _finish_layer(self, layer, h, o):
        B, _, T, _ = o.shape
        h = h + layer.self_attn.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        return h + layer.mlp(layer.post_attention_layernorm(h))

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor):
        """Run one prompt ([L] ids, L >= 1) with causal attention.

        Returns the per-layer keys/values ([kv_heads, L, head_dim]) for sharing across slots.
        """
        h = self.embed[ids][None]
        pos = torch.arange(ids.shape[0], device=self.device)[None]
        cos, sin = self.rotary(h, pos)
        cos, sin = cos[:, None], sin[:, None]
        prefix = []
        for layer in self.layers:
            q, k, v = self._qkv(layer, layer.input_layernorm(h), cos, sin)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling,
                                               enable_gqa=self.n_kv != self.n_heads)
            prefix.append((k[0], v[0]))
            h = self._finish_layer(layer, h, o)
        return prefix

    @torch.inference_mode()
    def decode(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One step for the rows in slots 0..B-1: input embeddings x [B, D] at `positions` [B].

        Writes each row's key/value at its position and returns float32 logits [B, vocab].
        """
        B = x.shape[0]
        span = int(positions.max()) + 1
        self.ensure_capacity(span)
        h = x[:, None, :]
        cos, sin = self.rotary(h, positions[:, None])
        cos, sin = cos[:, None], sin[:, None]
        # flat row index of (slot b, head h, position p) in a [slots*kv_heads*capacity, head_dim] view:
        # one index_copy_ per tensor is much cheaper than advanced-index assignment
        heads = torch.arange(self.n_kv, device=self.device)
        flat = ((torch.arange(B, device=self.device)[:, None] * self.n_kv + heads) * self.capacity
                + positions[:, None]).reshape(-1)
        # row b may attend to cache positions 0..positions[b]
        mask = (torch.arange(span, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, layer.input_layernorm(h), cos, sin)
            kc, vc = self.k[i], self.v[i]
            kc.view(-1, self.head_dim).index_copy_(0, flat, k.reshape(-1, self.head_dim))
            vc.view(-1, self.head_dim).index_copy_(0, flat, v.reshape(-1, self.head_dim))
            o = F.scaled_dot_product_attention(q, kc[:B, :, :span], vc[:B, :, :span], attn_mask=mask,
                                               scale=self.scaling, enable_gqa=self.n_kv != self.n_heads)
            h = self._finish_layer(layer, h, o)
        return self.lm_head(self.norm(h[:, 0])).float()

"""A decoder-only transformer over the slot-indexed cache: prefill a prompt once, then decode one
token (or one mixture of token embeddings) per row per step.

    embed → for each layer: pre_attention → write k/v to the cache → attention → post_attention
          → norm → LM head

The pieces, one file each: `layers.py` (the layer halves, shared by prefill and decode),
`linear.py` (the matrix products in the form each device runs fastest), `cache.py` (the cache),
`attention.py` (the kernels), `shared_prefix.py` (a prompt's cache read
once for all its rows), `cuda_graphs.py` (capture and replay of the step on CUDA).
"""
from __future__ import annotations

import torch

from strategies import attention, cpu, cpu_kernels, decode_attention, linear
from strategies.cache import KVCache, Prefix, max_positions
from strategies.cuda_graphs import StepGraphs
from strategies.layers import SUPPORTED, Layers, UnsupportedModel
from strategies.shared_prefix import PrefixStack, SharedPrefixes

__all__ = ["Decoder", "SharedPrefixes", "SUPPORTED", "UnsupportedModel"]


class Decoder:
    def __init__(self, model, max_slots: int, cuda_graphs: bool = True, compile: bool = False,
                 matmul: str = "auto", kernels: str = "auto"):
        cfg = self.config = model.config
        # "triton" (the CUDA default where Triton is installed): the step's attention reads only
        # each row's positions (decode_attention.py) and each norm is one kernel (rms_norm.py;
        # compiled, inductor fuses the norms itself); "cpu" (the CPU default where they build):
        # the step's small operations as compiled passes (cpu_kernels.py); "torch": SDPA over
        # the masked span and the modules' own norms
        self.kernels = kernels if kernels != "auto" else default_kernels(model, matmul, compile)
        triton = self.kernels == "triton"
        if triton and not decode_attention.available():
            raise ValueError("kernels='triton' needs Triton installed (it comes with CUDA builds of torch)")
        if self.kernels == "cpu" and (why := cpu_kernels_refusal(model, matmul, compile)):
            raise ValueError(why)
        self.layers = Layers(model, fused_norms=triton and not compile)
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.embed = model.get_input_embeddings().weight
        self.device, self.dtype = self.embed.device, self.embed.dtype
        self.max_positions = max_positions(cfg)
        self.max_slots = max_slots
        L = self.layers
        self.cache = KVCache(len(L), max_slots, L.n_kv, L.head_dim, self.max_positions, self.dtype, self.device)
        self.prefixes = PrefixStack(len(L), L.n_kv, L.head_dim, self.dtype, self.device)
        self.attention = "triton" if triton and decode_attention.supports(L.head_dim, L.n_heads // L.n_kv) else "sdpa"
        # The decode step's products (see linear.py). Packed (CPU), they replace the modules'
        # weights, which are released (one copy of the model in memory; linear.py says how the
        # model's own forward gets them back), so the prefill runs on them too. Other forms keep
        # the modules for the prefill, whose rounding transformers shares.
        self.matmul = matmul if matmul != "auto" else default_matmul(self.device, self.dtype, compile)
        packed = self.matmul == "packed"
        self.mats = L.mats(self.matmul, release=packed)
        self.prefill_mats = self.mats if packed else [None] * len(L)
        if self.device.type == "cpu":
            cpu.tune_malloc()
        self.head = linear.head(self.matmul, self.lm_head)
        if packed:   # a tied head is the embedding, which the input lookup still reads
            linear.release(self.lm_head, keep=(self.embed,))
        self._pre, self._post = L.pre_attention, L.post_attention
        if compile:
            # one compiled function serves every layer (their weights are its inputs) and every
            # row count and span (dynamic shapes): one compilation, not one per layer or bucket
            self._pre = torch.compile(self._pre, dynamic=True)
            self._post = torch.compile(self._post, dynamic=True)
        self.graphs = None
        if cuda_graphs and self.device.type == "cuda":
            # the graphs copy the logits into their float32 buffer, converting on the way
            step = lambda x, pos, span: self._step(x, pos, span, float32=False)  # noqa: E731
            self.graphs = StepGraphs(step, self.cache, max_slots, cfg.hidden_size,
                                     self.lm_head.weight.shape[0], self.dtype, self.device)

    @property
    def cuda_graphs(self) -> bool:
        return self.graphs is not None

    # ----- inputs -------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, D] of one token per row."""
        return self.embed[ids]

    @torch.inference_mode()
    def embed_mixture(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Input embeddings Σ_k w_k E[i_k] for [B, K] ids and weights; K = 1, w = 1 is a token."""
        if ids.shape[1] == 1:
            return self.embed[ids[:, 0]] * weights[:, :1].to(self.dtype)
        return torch.einsum("bk,bkd->bd", weights.to(self.dtype), self.embed[ids])

    # ----- prefill ------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, inject: tuple[torch.Tensor, torch.Tensor] | None = None) -> Prefix:
        """Run one prompt ([L] ids, L >= 1) with causal attention; return its keys/values per layer.

        `inject` = (positions [P], vectors [P, D]) replaces the input embeddings at those positions
        (soft thoughts, SoftCoT); every other position keeps its token's embedding.
        """
        h = self.embed[ids]
        if inject is not None:
            at, vectors = inject
            h = h.clone()
            h[at.to(self.device)] = vectors.to(self.device, self.dtype)
        n, L = h.shape[0], self.layers
        cos, sin = L.rotation(h, torch.arange(n, device=self.device))
        prefix: Prefix = []
        for i, layer in enumerate(L.layers):
            q, k, v = L.pre_attention(layer, h, cos, sin, self.prefill_mats[i])   # [n, heads, 1, hd]
            q, k, v = (t[:, :, 0].transpose(0, 1)[None] for t in (q, k, v))  # [1, heads, n, hd]
            prefix.append((k[0].contiguous(), v[0].contiguous()))
            if i == len(L) - 1:
                break  # the last layer's output feeds nothing: the prompt's last token is decoded next
            o = attention.causal(q, k, v, L.scaling)
            h = L.post_attention(layer, h, o[0].transpose(0, 1).reshape(n, -1), self.prefill_mats[i])
        return prefix

    # ----- prefix sharing -----------------------------------------------------------------
    def share(self, prefixes: list[Prefix], rows: list[list[int]], batch: int) -> SharedPrefixes:
        return self.prefixes.share(prefixes, rows, batch)

    def unshare(self) -> None:
        self.prefixes.clear()

    # ----- decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, x: torch.Tensor, positions: torch.Tensor,
               shared: SharedPrefixes | None = None, span: int | None = None) -> torch.Tensor:
        """One step for the rows in slots 0..B-1: input embeddings x [B, D] at `positions` [B].

        Writes each row's key/value at its position and returns float32 logits [B, vocab] (on
        CUDA graphs, a view valid until the next call). `span` is max(positions) + 1 when the
        caller knows it (saves a device sync). With `shared`, each group of rows reads its
        prompt's keys/values once (see shared_prefix.py).
        """
        span = int(positions.max()) + 1 if span is None else span
        if self.graphs is not None and shared is None:
            return self.graphs.run(x, positions, span)
        self.cache.ensure_capacity(span)
        if self.kernels == "cpu":
            return self._step_cpu(x, positions, shared)
        return self._step(x, positions, span, shared)

    def _step(self, x: torch.Tensor, positions: torch.Tensor, span: int,
              shared: SharedPrefixes | None = None, float32: bool = True) -> torch.Tensor:
        """The decode step proper: no host syncs, shapes fixed by (rows, span), so capturable."""
        B, L, cache = x.shape[0], self.layers, self.cache
        lo = shared.lo if shared is not None else 0
        cos, sin = L.rotation(x, positions)
        flat = cache.flat_index(positions)
        # row b attends to slot positions start..positions[b] (the rest is in its group's prefix)
        triton = self.attention == "triton" and shared is None
        mask = None if triton else attention.position_mask(positions, lo, span, self.dtype,
                                                            shared.start if shared is not None else None)
        h = x
        for i, layer in enumerate(L.layers):
            q, k, v = self._pre(layer, h, cos, sin, self.mats[i])
            cache.write(i, flat, k, v)
            qg = q.view(B, L.n_kv, L.n_heads // L.n_kv, L.head_dim)
            if triton:
                o = decode_attention.over_cache(qg, cache.k[i], cache.v[i], positions, span, L.scaling)
            elif shared is None:
                o = attention.over_cache(qg, *cache.rows(i, B, lo, span), mask, L.scaling)
            else:
                o, lse = attention.attend(qg, *cache.rows(i, B, lo, span), mask, L.scaling)
                o = shared.merge(i, qg, o, lse, L.scaling)
            h = self._post(layer, h, o, self.mats[i])
        logits = self.head(L.norm(self.norm, h))
        return logits.float() if float32 else logits

    def _step_cpu(self, x: torch.Tensor, positions: torch.Tensor, shared: SharedPrefixes | None) -> torch.Tensor:
        """The decode step on CPU with the compiled kernels: per layer four products and five
        passes (residual + norm, rotary + cache write, attention, residual + norm, SiLU × up).
        Each layer's closing residual add is made with the next layer's norm (or the final one)."""
        B, L, cache, K = x.shape[0], self.layers, self.cache, torch.ops.tts_cpu
        cos, sin = (t.reshape(B, -1) for t in L.rotation(x, positions))
        nq, nk = L.n_heads, L.n_kv
        start = torch.zeros_like(positions) if shared is None else shared.start
        h, residual = x, None
        for i, layer in enumerate(L.layers):
            m, attn = self.mats[i], layer.self_attn
            norm_in, norm_post = layer.input_layernorm, layer.post_attention_layernorm
            h, xn = K.add_rms_norm(h, residual, norm_in.weight, norm_in.variance_epsilon)
            qkv = m.qkv_joint(xn).view(B, -1, L.head_dim)
            q, k, v = qkv[:, :nq], qkv[:, nq:nq + nk], qkv[:, nq + nk:]
            if L.qk_norm:
                q = K.head_rms_norm(q, attn.q_norm.weight, attn.q_norm.variance_epsilon)
                k = K.head_rms_norm(k, attn.k_norm.weight, attn.k_norm.variance_epsilon)
            q = K.rope_kv(q, k, v, cos, sin, cache.k[i], cache.v[i], positions)
            if shared is None:
                o = K.attention(q, cache.k[i], cache.v[i], positions, start, None, None, None, L.scaling)
            else:   # the prompt's part as one block per prompt (GEMM-shaped), merged in the kernel
                o_pre, lse_pre = shared.prompt_block(i, q.view(B, nk, nq // nk, L.head_dim), L.scaling)
                o = K.attention(q, cache.k[i], cache.v[i], positions, start, o_pre, lse_pre, shared.inv, L.scaling)
            h, xn = K.add_rms_norm(h, m.o(o), norm_post.weight, norm_post.variance_epsilon)
            residual = m.down(K.silu_mul(m.gate_up_joint(xn)))
        _, xn = K.add_rms_norm(h, residual, self.norm.weight, self.norm.variance_epsilon)
        return self.head(xn).float()


def default_kernels(model, matmul: str = "auto", compile: bool = False) -> str:
    """Triton's kernels on CUDA where Triton is installed (it comes with CUDA builds of torch);
    the compiled CPU kernels wherever they can run (cpu_kernels_refusal); else torch's."""
    if model.device.type == "cuda":
        return "triton" if decode_attention.available() else "torch"
    return "torch" if cpu_kernels_refusal(model, matmul, compile) else "cpu"


def cpu_kernels_refusal(model, matmul: str = "auto", compile: bool = False) -> str | None:
    """Why the compiled CPU kernels cannot run this model's decode step, or None: they need a
    CPU, no --compile (inductor fuses the ops itself), a model they compute, the joint q/k/v and
    gate/up products (the default packed ones, or fused), and their build, tried last."""
    device = model.device
    if device.type != "cpu" or compile or not cpu_kernels.supports(model):
        return "kernels='cpu' runs float32 or bfloat16 SiLU models on a CPU, without --compile"
    if matmul == "auto":
        matmul = default_matmul(device, model.get_input_embeddings().weight.dtype, compile)
    if matmul not in ("packed", "fused"):
        return "kernels='cpu' needs the joint q/k/v and gate/up products (matmul 'packed' or 'fused')"
    if not cpu_kernels.available():
        return "kernels='cpu' needs the CPU kernels built (a C++ compiler; see cpu_kernels.py)"
    return None


def default_matmul(device: torch.device, dtype: torch.dtype, compile: bool = False) -> str:
    """CUDA: fused products (fewer, wider GEMMs run closer to the GPU's bandwidth at decode batch
    sizes). CPU: oneDNN-packed weights where this torch build has them, else weight-major MKL;
    compiled, weight-major too (inductor cannot lower a packed weight passed in as an input; it
    packs frozen weights itself)."""
    if device.type == "cuda":
        return "fused"
    if device.type == "cpu":
        return "packed" if linear.packing_available(dtype) and not compile else "weight_major"
    return "module"

"""A decoder-only transformer run over a preallocated, slot-indexed KV cache.

The weights, norms, activations and rotary embeddings are the Hugging Face model's own modules;
attention, the cache and the order of the decode step's matrix products are ours. That keeps every
supported architecture (Llama, Qwen2, Qwen3, Mistral and their derivatives) numerically what
transformers computes, while the cache can do what generate() cannot: share a prompt's prefill
across its N rows (and, in attention, read it once for all of them), write in place, and move a
row from one slot to another when a neighbour finishes.

Cache layout: for each layer, keys and values of shape [slots, kv_heads, capacity, head_dim].
Active rows always occupy slots 0..B-1, so a decode step works on plain views, never a gather.

On CUDA a decode step of a 135M-parameter model is ~1,300 small kernels, and launching them from
Python costs more than running them. There the step is captured once per (row bucket, key span)
as a CUDA graph over static input buffers and the cache, and replayed (see `_graphed`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


class UnsupportedModel(Exception):
    pass


class SharedPrefixes:
    """The rows of a batch grouped by the prefilled prompt they continue.

    A group's attention over its prompt is computed once for all its rows, as one block of
    queries against the prompt's keys/values, instead of once per row against each row's own
    copy ("cascade" attention): each prompt's cache is read once per step, not once per row. The
    groups are padded to a common size so that every layer makes one call for all of them.
    """

    def __init__(self, stacked, prefix_len: list[int], rows: list[list[int]], batch: int, device):
        G = len(rows)
        self.n_max = max(len(r) for r in rows)
        self.groups = G
        self.k, self.v, self.mask = stacked      # per layer [G, kv_heads, L_max, hd]; [G, 1, 1, L_max]
        idx = [0] * (G * self.n_max)              # padded position -> batch row (padding reads row 0)
        inv = [0] * batch                         # batch row -> padded position
        start = [0] * batch                       # first position a row reads from its own slot
        for j, rs in enumerate(rows):
            for t, b in enumerate(rs):
                idx[j * self.n_max + t] = b
                inv[b] = j * self.n_max + t
                start[b] = prefix_len[j]
        self.idx = torch.tensor(idx, device=device)
        self.inv = torch.tensor(inv, device=device)
        self.start = torch.tensor(start, device=device)
        self.lo = min(start)                      # first slot position any row reads


# A private op (it is what F.scaled_dot_product_attention runs on CPU); fall back if a release drops it.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def attend(q, k, v, mask=None, scale=None):
    """Attention output and log-sum-exp of the scores, for [B, heads, Lq, hd] queries against
    [B, heads, Lk, hd] keys/values, with an optional additive float mask broadcast to
    [B, heads, Lq, Lk]. The log-sum-exp lets two attentions over disjoint key sets be merged
    exactly. On CPU this is SDPA's own fused kernel, which returns it; elsewhere plain math."""
    if q.device.type == "cpu" and _CPU_FLASH is not None:
        return _CPU_FLASH(q, k, v, 0.0, False, attn_mask=mask, scale=scale)
    return attend_reference(q, k, v, mask, scale)


def attend_reference(q, k, v, mask=None, scale=None):
    s = (q @ k.transpose(-1, -2)).float() * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        s = s + mask
    lse = torch.logsumexp(s, dim=-1)
    out = (torch.exp(s - lse[..., None]).to(v.dtype)) @ v
    return out, lse


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _proj_weight_major(module: torch.nn.Linear, x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """module(x) for x [B, in], computed as (W xᵀ)ᵀ.

    On CPU, MKL runs this orientation 15–20% faster than x Wᵀ for the layer weights and ~40% faster
    for the 49k-row LM head at decode batch sizes (8–64 rows); see docs/performance.md. The result
    is a transposed view: elementwise ops and the next projection take it as it is, but queries
    are copied to row-major because SDPA's fused CPU kernel needs unit-stride heads.
    """
    y = (module.weight @ x.T).T
    if contiguous:
        y = y.contiguous()
    return y if module.bias is None else y + module.bias


def _proj_plain(module: torch.nn.Linear, x: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    return module(x)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


# CUDA graphs are captured for these row counts (a step pads its rows up to the next one) and for
# key spans in multiples of GRAPH_SPAN: few enough captures, little padding.
GRAPH_ROWS = (1, 2, 4, 8, 16, 24, 32, 48, 64)
GRAPH_SPAN = 256


def graph_rows(n: int, max_slots: int) -> int:
    """The captured row count a step of n rows runs at."""
    return min(next((b for b in GRAPH_ROWS if b >= n), None) or _round_up(n, 32), max_slots)


class Decoder:
    def __init__(self, model, max_slots: int, cuda_graphs: bool = True, compile: bool = False):
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
        self.proj = _proj_weight_major if self.device.type == "cpu" else _proj_plain
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self._stack_src: list = []   # the prompts whose caches `_stack` holds, padded and stacked
        self._stack = None
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], tuple] = {}   # (rows, span) -> (graph, its logits)
        self._graph_pool = None
        if compile:
            # one compiled function serves every layer (their weights are its inputs) and every
            # row count and span (dynamic shapes): one compilation, not one per layer or bucket
            self._pre_attention = torch.compile(self._pre_attention, dynamic=True)
            self._post_attention = torch.compile(self._post_attention, dynamic=True)
        if self.cuda_graphs:  # the graphs' inputs: a step copies its rows in, padding rows are zeros
            with torch.inference_mode():
                self._x = torch.zeros(max_slots, cfg.hidden_size, dtype=self.dtype, device=self.device)
                self._pos = torch.zeros(max_slots, dtype=torch.long, device=self.device)

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
        # the graphs read and write the old cache tensors; their memory pool dies with the last of
        # them, so the next capture starts a new one
        self._graphs.clear()
        self._graph_pool = None

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
            prefix.append((k[0].contiguous(), v[0].contiguous()))
            h = self._finish_layer(layer, h, o)
        return prefix

    @torch.inference_mode()
    def share(self, prefixes: list[list[tuple[torch.Tensor, torch.Tensor]]], rows: list[list[int]],
              batch: int) -> SharedPrefixes:
        """Group batch rows by prompt: `prefixes[j]` (from `prefill`) is continued by rows `rows[j]`.

        The padded stack of the prompts' keys/values is rebuilt only when the set of prompts changes.
        """
        # compared by identity while holding the prompts themselves: ids alone could be reused by
        # a later prompt once an earlier one is freed
        same = len(prefixes) == len(self._stack_src) and all(a is b for a, b in zip(prefixes, self._stack_src))
        if not same:
            self._stack = None  # free the old stack before building the new one
            lengths = [p[0][0].shape[1] for p in prefixes]
            L = max(lengths)
            shape = (len(prefixes), self.n_kv, L, self.head_dim)
            ks, vs = [], []
            for layer in range(len(self.layers)):
                k = torch.zeros(shape, dtype=self.dtype, device=self.device)
                v = torch.zeros(shape, dtype=self.dtype, device=self.device)
                for j, p in enumerate(prefixes):
                    k[j, :, : lengths[j]] = p[layer][0]
                    v[j, :, : lengths[j]] = p[layer][1]
                ks.append(k)
                vs.append(v)
            pad = torch.arange(L, device=self.device)[None, :] >= torch.tensor(lengths, device=self.device)[:, None]
            mask = torch.zeros(pad.shape, dtype=self.dtype, device=self.device).masked_fill_(pad, float("-inf"))
            self._stack = ((ks, vs, mask[:, None, None, :]), lengths)
            self._stack_src = list(prefixes)
        stacked, lengths = self._stack
        return SharedPrefixes(stacked, lengths, rows, batch, self.device)

    def unshare(self) -> None:
        """Free the stacked prompt caches."""
        self._stack_src, self._stack = [], None

    @torch.inference_mode()
    def decode(self, x: torch.Tensor, positions: torch.Tensor,
               shared: SharedPrefixes | None = None, span: int | None = None) -> torch.Tensor:
        """One step for the rows in slots 0..B-1: input embeddings x [B, D] at `positions` [B].

        Writes each row's key/value at its position and returns float32 logits [B, vocab].
        `span` is max(positions) + 1 when the caller knows it (saves a device sync).
        With `shared`, the rows of each group read their prompt's keys/values from the group's
        prefix (once for the group) and only their own continuation from their slot; the two
        partial attentions are merged through their log-sum-exps, which is exact.
        """
        span = int(positions.max()) + 1 if span is None else span
        if self.cuda_graphs and shared is None:
            return self._graphed(x, positions, span)
        self.ensure_capacity(span)
        return self._step(x, positions, shared.lo if shared is not None else 0, span, shared)

    def _graphed(self, x: torch.Tensor, positions: torch.Tensor, span: int) -> torch.Tensor:
        """`decode` by replaying the step captured for this many rows and this key span.

        Padding rows (zeros at position 0) write into free slots, which a row placed there later
        overwrites before reading; padding key columns are masked like any future position.
        """
        B = x.shape[0]
        rows = graph_rows(B, self.max_slots)
        span = min(_round_up(span, GRAPH_SPAN), max(self.max_positions, span))
        self.ensure_capacity(span)
        self._x[:B].copy_(x)
        self._x[B:rows].zero_()
        self._pos[:B].copy_(positions)
        self._pos[B:rows].zero_()
        key = (rows, span)
        if key not in self._graphs:
            self._graphs[key] = self._capture(rows, span)
        graph, logits = self._graphs[key]
        graph.replay()
        return logits[:B].clone()  # the next replay overwrites the graph's output

    def _capture(self, rows: int, span: int):
        x, pos = self._x[:rows], self._pos[:rows]
        # one eager run first, on a side stream as capture requires: it initialises kernels and
        # handles, and writes exactly the keys/values the replay will write
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._step(x, pos, 0, span, None)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            logits = self._step(x, pos, 0, span, None)
        self._graph_pool = graph.pool()  # graphs replay one at a time, so they share one pool
        return graph, logits

    def _step(self, x: torch.Tensor, positions: torch.Tensor, lo: int, span: int,
              shared: SharedPrefixes | None) -> torch.Tensor:
        """The decode step proper: no host syncs, shapes fixed by (rows, lo, span), so capturable."""
        B = x.shape[0]
        dev = self.device
        cos, sin = self.rotary(x[:, None, :], positions[:, None])
        cos, sin = cos[:, None], sin[:, None]   # [B, 1, 1, head_dim]: broadcast over heads
        # flat row index of (slot b, head h, position p) in a [slots*kv_heads*capacity, head_dim] view:
        # one index_copy_ per tensor is much cheaper than advanced-index assignment
        heads = torch.arange(self.n_kv, device=dev)
        flat = ((torch.arange(B, device=dev)[:, None] * self.n_kv + heads) * self.capacity
                + positions[:, None]).reshape(-1)
        # row b attends to slot positions start[b]..positions[b] (the rest is in its group's prefix)
        cols = torch.arange(lo, span, device=dev)[None, :]
        allowed = cols <= positions[:, None]
        if shared is not None:
            allowed &= cols >= shared.start[:, None]
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=dev).masked_fill_(~allowed, float("-inf"))
        mask = mask[:, None, None, :]
        hd, kv, g_size = self.head_dim, self.n_kv, self.n_heads // self.n_kv
        pre, post = self._pre_attention, self._post_attention
        h = x
        for i, layer in enumerate(self.layers):
            q, k, v = pre(layer, h, cos, sin)
            kc, vc = self.k[i], self.v[i]
            kc.view(-1, hd).index_copy_(0, flat, k.reshape(-1, hd))
            vc.view(-1, hd).index_copy_(0, flat, v.reshape(-1, hd))
            # query heads sharing a key/value head become that head's query rows: no K/V repeat
            qg = q.view(B, kv, g_size, hd)
            ks, vs = kc[:B, :, lo:span], vc[:B, :, lo:span]
            if shared is None:
                o = F.scaled_dot_product_attention(qg, ks, vs, attn_mask=mask, scale=self.scaling)
            else:
                o, lse = attend(qg, ks, vs, mask, self.scaling)
                o = self._add_prefix(i, qg, o, lse, shared)
            h = post(layer, h, o)
        return self.proj(self.lm_head, self.norm(h), contiguous=True).float()

    # The two halves of a decoder layer around attention: plain elementwise work and projections,
    # which `compile` hands to torch.compile (the cache writes and attention stay eager).
    def _pre_attention(self, layer, h, cos, sin):
        attn, proj, hd, B = layer.self_attn, self.proj, self.head_dim, h.shape[0]
        a = layer.input_layernorm(h)
        q = proj(attn.q_proj, a, contiguous=True).reshape(B, -1, 1, hd)
        k = proj(attn.k_proj, a).reshape(B, -1, 1, hd)
        v = proj(attn.v_proj, a).reshape(B, -1, 1, hd)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _post_attention(self, layer, h, o):
        proj, mlp = self.proj, layer.mlp
        h = h + proj(layer.self_attn.o_proj, o.reshape(h.shape[0], -1))
        m = layer.post_attention_layernorm(h)
        return h + proj(mlp.down_proj, mlp.act_fn(proj(mlp.gate_proj, m)) * proj(mlp.up_proj, m))

    def _add_prefix(self, layer: int, qg, o_own, lse_own, sh: SharedPrefixes):
        """Merge each row's attention over its own tokens with its group's attention over the prompt."""
        B, kv, gs, hd = qg.shape
        G, n = sh.groups, sh.n_max
        # a group's n rows × gs query heads per key/value head form one [kv, n*gs] query block
        qb = qg.index_select(0, sh.idx).view(G, n, kv, gs, hd).transpose(1, 2).reshape(G, kv, n * gs, hd)
        o, lse = attend(qb, sh.k[layer], sh.v[layer], sh.mask, self.scaling)
        o_pre = o.view(G, kv, n, gs, hd).transpose(1, 2).reshape(G * n, kv, gs, hd).index_select(0, sh.inv)
        lse_pre = lse.view(G, kv, n, gs).transpose(1, 2).reshape(G * n, kv, gs).index_select(0, sh.inv)
        # softmax over both key sets = the two partial softmaxes weighted by their total masses
        w = torch.sigmoid(lse_own - lse_pre)[..., None].to(o_own.dtype)
        return o_pre + w * (o_own - o_pre)

"""Prefix-shared ("cascade") attention: a prompt's keys/values read once per step for all its rows.

Rows continuing the same prefilled prompt form a group. A group's attention over its prompt is
one block of queries (rows × query heads) against the prompt's keys/values; each row attends to
its own continuation from its slot; the two partial attentions are merged exactly through their
log-sum-exps. The groups are padded to a common size so each layer makes one call for all of them.
"""
from __future__ import annotations

import torch

from strategies.attention import attend
from strategies.cache import Prefix


class SharedPrefixes:
    """One step's grouping: which batch rows read which stacked prompt."""

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
        # rows already in group order with no padding (one prompt's rows, or several in turn, all
        # groups full): the gathers in and out of group order would copy rows onto themselves
        self.in_order = idx == list(range(batch))

    def prompt_block(self, layer: int, qg, scale: float):
        """Each group's rows against its prompt as one block: output [G, kv, n * gs, hd] and
        log-sum-exps [G, kv, n * gs], row b at block place inv[b] (group inv // n, place inv % n)."""
        B, kv, gs, hd = qg.shape
        rows = qg if self.in_order else qg.index_select(0, self.idx)
        # a group's n rows × gs query heads per key/value head form one [kv, n*gs] query block
        qb = rows.view(self.groups, self.n_max, kv, gs, hd).transpose(1, 2).reshape(self.groups, kv, self.n_max * gs, hd)
        return attend(qb, self.k[layer], self.v[layer], self.mask, scale)

    def merge(self, layer: int, qg, o_own, lse_own, scale: float):
        """Each row's attention over its own tokens merged with its group's attention over the prompt."""
        B, kv, gs, hd = qg.shape
        G, n = self.groups, self.n_max
        o, lse = self.prompt_block(layer, qg, scale)
        o_pre = o.view(G, kv, n, gs, hd).transpose(1, 2).reshape(G * n, kv, gs, hd)
        lse_pre = lse.view(G, kv, n, gs).transpose(1, 2).reshape(G * n, kv, gs)
        if not self.in_order:
            o_pre, lse_pre = o_pre.index_select(0, self.inv), lse_pre.index_select(0, self.inv)
        # softmax over both key sets = the two partial softmaxes weighted by their total masses
        w = torch.sigmoid(lse_own - lse_pre)[..., None].to(o_own.dtype)
        return o_pre + w * (o_own - o_pre)


class PrefixStack:
    """The padded stack of the prompts' keys/values, rebuilt only when the set of prompts changes."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype, device):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self._src: list = []
        self._stack = None

    @torch.inference_mode()
    def share(self, prefixes: list[Prefix], rows: list[list[int]], batch: int) -> SharedPrefixes:
        """Group batch rows by prompt: `prefixes[j]` (from prefill) is continued by rows `rows[j]`."""
        # compared by identity while holding the prompts themselves: ids alone could be reused by
        # a later prompt once an earlier one is freed
        same = len(prefixes) == len(self._src) and all(a is b for a, b in zip(prefixes, self._src))
        if not same:
            self._stack = None  # free the old stack before building the new one
            lengths = [p[0][0].shape[1] for p in prefixes]
            L = max(lengths)
            shape = (len(prefixes), self.kv_heads, L, self.head_dim)
            ks, vs = [], []
            for layer in range(self.layers):
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
            self._src = list(prefixes)
        stacked, lengths = self._stack
        return SharedPrefixes(stacked, lengths, rows, batch, self.device)

    def clear(self) -> None:
        """Free the stacked prompt caches."""
        self._src, self._stack = [], None

"""The slot-indexed key/value cache.

For each layer, keys and values of shape [slots, kv_heads, capacity, head_dim]. A row of the batch
owns one slot; active rows always occupy slots 0..B-1 (the engine moves the last row into a
finished row's slot), so a decode step works on plain views of the cache, never a gather.

All writes run in inference mode: the cache may have been (re)allocated inside a decode step, and
inference tensors cannot be updated in place outside it.
"""
from __future__ import annotations

import torch

Prefix = list[tuple[torch.Tensor, torch.Tensor]]   # per layer: keys, values [kv_heads, L, head_dim]


def max_positions(config) -> int:
    """The longest sequence a model takes (no limit when its config names none)."""
    return int(getattr(config, "max_position_embeddings", None) or 1 << 30)


class KVCache:
    def __init__(self, layers: int, slots: int, kv_heads: int, head_dim: int, max_positions: int, dtype, device):
        self.layers, self.slots, self.kv_heads, self.head_dim = layers, slots, kv_heads, head_dim
        self.max_positions = max_positions
        self.dtype, self.device = dtype, device
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.generation = 0   # bumped on every reallocation: whatever captured the old tensors is stale

    @torch.inference_mode()
    def ensure_capacity(self, positions: int) -> None:
        """Grow every slot to hold `positions` tokens (amortised doubling, copy on growth)."""
        if positions <= self.capacity:
            return
        new = max(positions, 2 * self.capacity, 256)
        new = min(-(-new // 64) * 64, max(self.max_positions, positions))
        shape = (self.slots, self.kv_heads, new, self.head_dim)
        for store in (self.k, self.v):
            grown = []
            for i in range(self.layers):
                t = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if store:
                    t[:, :, : self.capacity] = store[i]
                grown.append(t)
            store[:] = grown
        self.capacity = new
        self.generation += 1

    @torch.inference_mode()
    def write_prefix(self, slot: int, prefix: Prefix) -> None:
        """Copy a prefilled prompt's keys/values into a slot."""
        self.write_slot(slot, 0, prefix)

    @torch.inference_mode()
    def read_slot(self, slot: int, start: int, end: int) -> Prefix:
        """A copy of a slot's positions start..end-1, in write_prefix's form (a paused row's own
        continuation: its prompt stays in the request's shared prefix)."""
        return [(k[slot, :, start:end].clone(), v[slot, :, start:end].clone()) for k, v in zip(self.k, self.v)]

    @torch.inference_mode()
    def write_slot(self, slot: int, start: int, part: Prefix) -> None:
        """Copy read_slot's keys/values back into a slot, from position `start`."""
        if not part:
            return
        end = start + part[0][0].shape[1]
        self.ensure_capacity(end + 1)
        for layer, (k, v) in enumerate(part):
            self.k[layer][slot, :, start:end] = k
            self.v[layer][slot, :, start:end] = v

    @torch.inference_mode()
    def move_slot(self, src: int, dst: int, start: int, end: int) -> None:
        """Move a row's positions start..end-1 to another slot."""
        for store in (self.k, self.v):
            for t in store:
                t[dst, :, start:end] = t[src, :, start:end]

    def flat_index(self, positions: torch.Tensor) -> torch.Tensor:
        """Where rows 0..B-1 write their token at `positions`: flat row indices of (slot, head, position)
        in a [slots * kv_heads * capacity, head_dim] view (one index_copy_ per tensor is much cheaper
        than an advanced-index assignment). No host sync: capturable in a CUDA graph."""
        B, dev = positions.shape[0], positions.device
        heads = torch.arange(self.kv_heads, device=dev)
        return ((torch.arange(B, device=dev)[:, None] * self.kv_heads + heads) * self.capacity
                + positions[:, None]).reshape(-1)

    def write(self, layer: int, flat: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one token per row (k/v [B, kv_heads, 1, head_dim]) at the `flat_index` places."""
        hd = self.head_dim
        self.k[layer].view(-1, hd).index_copy_(0, flat, k.reshape(-1, hd))
        self.v[layer].view(-1, hd).index_copy_(0, flat, v.reshape(-1, hd))

    def rows(self, layer: int, B: int, lo: int, span: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of rows 0..B-1's keys/values over positions lo..span-1."""
        return self.k[layer][:B, :, lo:span], self.v[layer][:B, :, lo:span]

"""Decode steps captured as CUDA graphs and replayed.

On CUDA a decode step is ~1,300 small kernels for a 135M-parameter model, and launching them from
Python costs more than running them. A step is captured once per (row bucket, key span bucket)
over static input buffers, the cache and one static logits buffer, then replayed. All graphs
share one memory pool (they replay one at a time), and are dropped when the cache is reallocated.
"""
from __future__ import annotations

import torch

# A step pads its rows up to the next captured row count: few captures, little padding.
GRAPH_ROWS = (1, 2, 4, 8, 16, 24, 32, 48, 64)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def graph_rows(n: int, max_slots: int) -> int:
    """The captured row count a step of n rows runs at."""
    return min(next((b for b in GRAPH_ROWS if b >= n), None) or _round_up(n, 32), max_slots)


def graph_span(span: int, max_positions: int) -> int:
    """The key span a step of `span` positions is captured for: a multiple of 128 up to 1,024
    positions, then of an eighth of the power of two below it — attention reads every padded
    column, so padding costs at most 128 columns or 12.5%, at most 8 captures per doubling.
    (128: the attention kernels work in blocks of key columns; a finer span saved nothing.)"""
    step = max(128, (1 << (max(span, 1).bit_length() - 1)) // 8)
    return min(_round_up(span, step), max(max_positions, span))


class StepGraphs:
    def __init__(self, step, cache, max_slots: int, hidden: int, vocab: int, dtype, device):
        self.step = step      # step(x, positions, span) -> logits [rows, vocab]: no host syncs
        self.cache = cache
        self.max_slots = max_slots
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._pool = None
        self._generation = cache.generation
        with torch.inference_mode():  # inputs: a step copies its rows in, padding rows are zeros
            self._x = torch.zeros(max_slots, hidden, dtype=dtype, device=device)
            self._pos = torch.zeros(max_slots, dtype=torch.long, device=device)
            self._logits = torch.zeros(max_slots, vocab, dtype=torch.float32, device=device)

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, x: torch.Tensor, positions: torch.Tensor, span: int) -> torch.Tensor:
        """The step for rows x [B, D] at `positions`, by replaying its graph. The logits are a view
        of the graphs' output buffer, valid until the next call.

        Padding rows (zeros at position 0) write into free slots, which a row placed there later
        overwrites before reading; padding key columns are masked like any future position.
        """
        B = x.shape[0]
        rows = graph_rows(B, self.max_slots)
        span = graph_span(span, self.cache.max_positions)
        self.cache.ensure_capacity(span)
        if self.cache.generation != self._generation:
            # the graphs read and write the old cache tensors; their pool dies with the last of
            # them, so the next capture starts a new one
            self._graphs.clear()
            self._pool = None
            self._generation = self.cache.generation
        self._x[:B].copy_(x)
        self._x[B:rows].zero_()
        self._pos[:B].copy_(positions)
        self._pos[B:rows].zero_()
        key = (rows, span)
        if key not in self._graphs:
            self._graphs[key] = self._capture(rows, span)
        self._graphs[key].replay()
        return self._logits[:B]

    def _capture(self, rows: int, span: int) -> torch.cuda.CUDAGraph:
        x, pos, out = self._x[:rows], self._pos[:rows], self._logits[:rows]
        device = x.device
        # one eager run first, on a side stream as capture requires: it initialises kernels and
        # handles, and writes exactly the keys/values the replay will write
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            out.copy_(self.step(x, pos, span))
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out.copy_(self.step(x, pos, span))
        self._pool = graph.pool()
        return graph

"""The batched decode loop every generator shares.

Requests (one prompt, N samples) stream in; each prompt is prefilled once and its keys/values are
copied into the slots of its N rows. Rows decode together, one token (or one concept token) per
step, and finish independently; a finished row's slot goes to the next waiting row, and when none
waits the last active row moves into the hole, so the batch stays dense and finished rows cost
nothing. Each row's next input is a mixture of token embeddings — a single token with weight 1 for
discrete decoding — which is what lets soft and discrete rows share a batch.

A generator is a *policy* (strategies/generators/): it turns a step's logits into each row's
emitted token and next input. The engine owns everything else: scheduling, per-token signals,
forced tokens, stopping, and the per-sample record.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from strategies.decoder import Decoder, SharedPrefixes
from strategies.rng import row_rng
from strategies.sampler import raw_signals


@dataclass
class Row:
    """One (prompt, sample) being decoded."""

    req: "Request"
    i: int
    rng: np.random.Generator
    pos: int                      # cache position of the pending input
    inp_ids: list[int]            # pending input: a mixture of these token embeddings…
    inp_w: list[float]            # …with these weights
    ids: list[int] = field(default_factory=list)
    logprob: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    self_certainty: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    forced: deque = field(default_factory=deque)  # tokens to emit regardless of the logits
    state: dict = field(default_factory=dict)     # the policy's own per-row state
    finish: str | None = None


@dataclass
class Request:
    """One input record: a tokenised prompt and how many samples to draw from it."""

    key: Any                # the record id (keys the random streams)
    prompt_ids: list[int]
    n: int
    payload: Any = None     # carried through untouched (the input record)
    error: str | None = None
    rows: list[Row] = field(default_factory=list)
    prefix: list | None = None
    unplaced: int = 0

    @property
    def done(self) -> bool:
        return self.error is not None or (len(self.rows) == self.n and all(r.finish for r in self.rows))


@dataclass
class Step:
    """What a policy decides for one row at one step."""

    token: int
    next_ids: list[int]
    next_w: list[float]


class Engine:
    def __init__(self, model, tokenizer, policy, *, batch_size: int = 64, max_new_tokens: int = 256,
                 stop: Iterable[str] = (), seed: int = 0, ignore_eos: bool = False, progress=None,
                 share_prefix: bool = True, cuda_graphs: bool = True, compile: bool = False):
        self.decoder = Decoder(model, max_slots=batch_size, cuda_graphs=cuda_graphs, compile=compile)
        self.tokenizer = tokenizer
        self.policy = policy
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop = [s for s in stop if s]
        # a stop string spans at most this many tokens: every token decodes to at least one char
        self.stop_window = max((len(s) for s in self.stop), default=0) + 2
        self.seed = seed
        self.ignore_eos = ignore_eos
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.vocab_size = len(tokenizer)
        self.progress = progress
        self.tokens_generated = 0
        # the CUDA graphs capture per-row attention only; on a GPU the saved prompt reads are
        # worth far less than the launches the graphs save
        self.share_prefix = share_prefix and not self.decoder.cuda_graphs
        policy.bind(self)

    # ----- scheduling ------------------------------------------------------------------
    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Decode every request; yield them, finished, in input order."""
        source = iter(requests)
        waiting: deque[Row] = deque()
        active: list[Row] = []
        in_order: deque[Request] = deque()
        exhausted = False
        while True:
            while len(active) < self.batch_size:
                if not waiting:
                    if exhausted:
                        break
                    req = next(source, None)
                    if req is None:
                        exhausted = True
                        break
                    in_order.append(req)
                    waiting.extend(self._admit(req))
                    continue
                self._place(waiting.popleft(), active)
            while in_order and in_order[0].done:
                yield in_order.popleft()
            if not active:
                if exhausted and not waiting:
                    break
                continue
            self._step(active)
            self._retire(active)
        while in_order:
            yield in_order.popleft()

    def _admit(self, req: Request) -> list[Row]:
        if req.error is not None:
            return []
        ids = req.prompt_ids
        # The last prompt token is every row's first input, so the shared prefill covers the rest.
        req.prefix = self.decoder.prefill(torch.tensor(ids[:-1], device=self.decoder.device)) if len(ids) > 1 else []
        req.rows = [Row(req, i, row_rng(self.seed, req.key, i), len(ids) - 1, [ids[-1]], [1.0])
                    for i in range(req.n)]
        req.unplaced = req.n
        for row in req.rows:
            self.policy.start(row)
        return list(req.rows)

    def _place(self, row: Row, active: list[Row]) -> None:
        slot = len(active)
        self.decoder.write_prefix(slot, row.req.prefix)
        active.append(row)
        row.req.unplaced -= 1

    def _retire(self, active: list[Row]) -> None:
        """Drop finished rows, moving the last active row into each hole."""
        slot = 0
        while slot < len(active):
            if active[slot].finish is None:
                slot += 1
                continue
            req = active[slot].req
            if req.unplaced == 0 and all(r.finish for r in req.rows):
                req.prefix = None  # no row reads the shared prompt cache any more
            last = active.pop()
            if slot < len(active):
                self.decoder.move_slot(len(active), slot, last.pos)
                active[slot] = last

    # ----- one decode step -------------------------------------------------------------
    def _step(self, active: list[Row]) -> None:
        dev = self.decoder.device
        x = self._inputs(active)
        pos = [r.pos for r in active]
        positions = torch.tensor(pos, device=dev)
        logits = self.decoder.decode(x, positions, self._shared(active), span=max(pos) + 1)[:, : self.vocab_size]
        sig = raw_signals(logits, self.vocab_size)
        steps = self.policy.choose(active, logits, sig)
        for b, (r, st) in enumerate(zip(active, steps)):
            if r.forced:
                tok = r.forced.popleft()
                st = Step(tok, [tok], [1.0])
            r.inp_ids, r.inp_w = st.next_ids, st.next_w
            r.ids.append(st.token)
        toks = torch.tensor([r.ids[-1] for r in active], device=dev)
        # one transfer for the four signals (each .tolist() on a GPU is a sync)
        lp, ent, sc, conf = torch.stack([sig.logprob(toks), sig.entropy, sig.self_certainty,
                                         sig.confidence]).tolist()
        for b, r in enumerate(active):
            r.logprob.append(lp[b])
            r.entropy.append(ent[b])
            r.self_certainty.append(sc[b])
            r.confidence.append(conf[b])
            r.pos += 1
            self.policy.after(r)
            self._check_finish(r)
        self.tokens_generated += len(active)
        if self.progress is not None:
            self.progress.update(len(active))

    def _inputs(self, active: list[Row]) -> torch.Tensor:
        """The rows' input embeddings [B, D]: each a mixture of token embeddings."""
        dec = self.decoder
        K = max(len(r.inp_ids) for r in active)
        if K == 1 and all(r.inp_w[0] == 1.0 for r in active):  # plain tokens: a lookup, no weights
            return dec.embed_tokens(torch.tensor([r.inp_ids[0] for r in active]).to(dec.device))
        pad = [[0] * (K - len(r.inp_ids)) for r in active]
        ids = torch.tensor([r.inp_ids + p for r, p in zip(active, pad)], dtype=torch.long)
        w = torch.tensor([r.inp_w + [0.0] * len(p) for r, p in zip(active, pad)], dtype=torch.float32)
        return dec.embed_mixture(ids.to(dec.device), w.to(dec.device))

    # Prefix-shared attention pays a few small ops per group and layer, and saves re-reading the
    # prompt's cache once per extra row; with fewer than this many rows per prompt on average it
    # is not worth it and every row reads its own copy.
    SHARE_MIN_ROWS = 4

    def _shared(self, active: list[Row]) -> SharedPrefixes | None:
        if not self.share_prefix:
            return None
        groups: dict[int, list[int]] = {}
        for b, r in enumerate(active):
            groups.setdefault(id(r.req), []).append(b)
        # a stable group order lets the decoder keep its stacked prompt caches from step to step
        rows = sorted(groups.values(), key=lambda rs: id(active[rs[0]].req))
        prefixes = [active[rs[0]].req.prefix for rs in rows]
        if len(active) < self.SHARE_MIN_ROWS * len(rows) or not all(prefixes):
            self.decoder.unshare()
            return None
        return self.decoder.share(prefixes, rows, len(active))

    def _check_finish(self, r: Row) -> None:
        if r.forced:
            return  # forced tokens (e.g. an inserted think-end string) are always completed
        if not self.ignore_eos and r.ids[-1] in self.eos_ids:
            r.finish = "stop"
        elif self.stop and any(s in self.tokenizer.decode(r.ids[-self.stop_window:]) for s in self.stop):
            r.finish = "stop"
        elif len(r.ids) >= self.max_new_tokens or r.pos + 1 >= self.decoder.max_positions:
            r.finish = "length"

    # ----- results ---------------------------------------------------------------------
    def text_of(self, r: Row) -> str:
        text = self.tokenizer.decode(r.ids, skip_special_tokens=True)
        for s in self.stop:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        return text


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the generation config's."""
    ids = set()
    for src in (getattr(model, "generation_config", None), model.config, tokenizer):
        eos = getattr(src, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return ids

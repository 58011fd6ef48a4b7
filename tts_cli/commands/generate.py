"""`tts generate`: sample N reasoning traces per prompt."""
from __future__ import annotations

import sys
from enum import Enum
from typing import List, Optional

import typer

from strategies.generators.build import sampling_defaults
from strategies.generators.params import ANSWER as SOFT_ANSWER
from strategies.generators.params import SoftCoTParams, SoftParams
from tts_cli.commands import _prune_opts as P
from tts_cli.commands import _search_opts as S
from strategies.jsonl import InputError
from strategies.models import DTYPE_HELP

DISCRETE, SOFT_THINKING = sampling_defaults("discrete"), sampling_defaults("soft")
SOFT = "Soft thinking (--mode soft)"
PENALTIES = "Penalties (vLLM's meanings; they shape sampling, not the recorded signals)"
ANSWER = "Soft thinking: answer phase"
SOFTCOT = "SoftCoT (--mode softcot, docs/softcot.md)"
SCALE = "Engines for scale (--backend, docs/scale.md)"
SAMPLING = "Sampling"
IO = "Input and output (docs/format.md)"
MODEL = "Model, device and batching"


# The parameters below that the generators read (strategies/generators/build.py); the rest are the run's.
GENERATOR_OPTIONS = frozenset({
    "temperature", "top_p", "top_k", "min_p",
    "max_topk", "noise", "gumbel_tau", "dirichlet_alpha", "dirichlet_on", "gaussian_sigma", "think_start", "think_end",
    "cold_stop_entropy", "cold_stop_steps", "soft_budget",
    "answer_temperature", "answer_top_p", "answer_top_k", "answer_min_p",
    "assistant", "projection", "thoughts", "perturb", "perturb_sigma", "per_chain", "softcot_template", "raw"})


class Mode(str, Enum):
    discrete = "discrete"
    soft = "soft"
    softcot = "softcot"


class Perturb(str, Enum):
    none = "none"
    init_tokens = "init-tokens"
    gaussian = "gaussian"


class DirichletOn(str, Enum):
    truncated = "truncated"
    topk = "topk"


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


class Noise(str, Enum):
    none = "none"
    gumbel = "gumbel"
    dirichlet = "dirichlet"
    gaussian = "gaussian"


@P.with_pruner_options
def generate(
    input: str = typer.Argument("-", help="Prompt JSONL file, or - for stdin."),
    mode: Mode = typer.Option(Mode.discrete, "--mode", rich_help_panel=SAMPLING, help="How traces are sampled."),
    model: str = typer.Option("smollm2-135m", "--model", "-m",
                              rich_help_panel=MODEL, help="Model alias, local Hugging Face directory, .gguf file, or a hub id already in the local cache."),
    samples: int = typer.Option(1, "-n", "--samples", min=1, rich_help_panel=SAMPLING, help="Samples (traces) per prompt."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, show_default=False,
                                                rich_help_panel=SAMPLING, help="Sampling temperature; 0 = greedy. In soft mode the thinking temperature. "
                                                f"[default: {DISCRETE.temperature} discrete, {SOFT_THINKING.temperature} soft]"),
    top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0, show_default=False,
                                          rich_help_panel=SAMPLING, help="Nucleus sampling mass (1 = off). "
                                          f"[default: {DISCRETE.top_p} discrete, {SOFT_THINKING.top_p} soft]"),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=0, show_default=False,
                                        rich_help_panel=SAMPLING, help="Keep the k most likely tokens (0 = off). "
                                        f"[default: {DISCRETE.top_k} discrete, {SOFT_THINKING.top_k} soft]"),
    min_p: Optional[float] = typer.Option(None, "--min-p", min=0.0, max=1.0, show_default=False,
                                          rich_help_panel=SAMPLING, help="Drop tokens below min_p x the top probability (0 = off). "
                                          f"[default: {DISCRETE.min_p} discrete, {SOFT_THINKING.min_p} soft]"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, rich_help_panel=SAMPLING, help="Most tokens generated per sample."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", rich_help_panel=SAMPLING, help="Stop string (repeatable); cut from the text."),
    seed: int = typer.Option(0, "--seed", rich_help_panel=SAMPLING, help="Seed; with the record id and sample index it fixes every random number."),
    output: str = typer.Option("-", "-o", "--output", rich_help_panel=IO, help="Output JSONL file, or - for stdout."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, show_default=False,
                                             rich_help_panel=MODEL, help="Rows (prompt x sample) decoded together. [default: 64 on CPU; on CUDA 256, fewer if their cache would not fit in memory]"),
    trace: bool = typer.Option(False, "--trace", rich_help_panel=IO, help="Add per-token arrays (ids, logprob, entropy, self_certainty, confidence)."),
    raw: bool = typer.Option(False, "--raw", rich_help_panel=IO, help="Feed the prompt as is, without the chat template."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", rich_help_panel=IO, help="Input field holding the prompt."),
    id_field: str = typer.Option("id", "--id-field", rich_help_panel=IO, help="Input field holding the record id (missing: the line number)."),
    shard: Optional[str] = typer.Option(None, "--shard", rich_help_panel=IO, help="i/n: only every n-th record, starting at the i-th (0-based)."),
    on_error: OnError = typer.Option(OnError.fail, "--on-error",
                                     rich_help_panel=IO, help="fail: stop with an error naming the line; skip: write the record with an 'error' field and go on."),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=IO, help="Skip ids already in --output and append to it."),
    device: str = typer.Option("auto", "--device", rich_help_panel=MODEL, help="auto | cpu | cuda (auto: cuda when available)."),
    dtype: str = typer.Option("auto", "--dtype", rich_help_panel=MODEL, help=DTYPE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=IO, help="No progress bar (it is also off when stderr is not a terminal)."),
    compile: bool = typer.Option(False, "--compile", rich_help_panel=MODEL, help="torch.compile the decode step's layers: about 1.3x faster "
                                 "decoding on CUDA after a one-off compile (~7 s there); no gain on CPU. "
                                 "See docs/performance.md."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs",
                                     rich_help_panel=MODEL, help="On CUDA, capture each decode step shape once and replay it."),
    # --- prompts, selection, penalties, resume checks --------------------------------------
    system: Optional[str] = typer.Option(None, "--system", rich_help_panel=IO, help="A system message, put in front of each prompt through the chat template "
                                         "(a record's own leading system message wins)."),
    show_prompt: bool = typer.Option(False, "--show-prompt", rich_help_panel=IO, help="Print the first selected record's prompt as the model will read it "
                                     "(chat template applied) to stderr and exit; loads only the tokenizer."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, rich_help_panel=IO, help="Only the first N records, counted after --shard and --resume "
                                        "have dropped theirs."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", rich_help_panel=PENALTIES,
                                             help="vLLM's, p > 0: logits of tokens in the prompt or output divided by p if positive, "
                                             "multiplied by p if not (1 = off)."),
    presence_penalty: float = typer.Option(0.0, "--presence-penalty", rich_help_panel=PENALTIES,
                                           help="vLLM's: subtract p from the logits of every token already in the output (0 = off)."),
    frequency_penalty: float = typer.Option(0.0, "--frequency-penalty", rich_help_panel=PENALTIES,
                                            help="vLLM's: subtract p x its count in the output from each token's logit (0 = off)."),
    top_logprobs: int = typer.Option(0, "--top-logprobs", min=0, max=20,
                                     rich_help_panel=IO, help="Per token, the K most likely ids and their raw log-probabilities in "
                                     "trace.top_logprobs; turns the trace on (0 = off)."),
    force: bool = typer.Option(False, "--force", rich_help_panel=IO, help="With --resume: append even if the file was made with other settings."),
    backend: str = typer.Option("native", "--backend", rich_help_panel=SCALE,
                                help="Which engine decodes: native (our sampler) | vllm (one vLLM request per trace; "
                                     "pip install 'tts-cli[vllm]') | ray (vLLM on a Ray cluster through Ray Data). docs/scale.md."),
    engine_arg: Optional[List[str]] = typer.Option(None, "--engine-arg", rich_help_panel=SCALE, show_default=False,
                                                   help="KEY=VALUE passed to the engine (repeatable), e.g. tensor_parallel_size=4, "
                                                        "enforce_eager=true; values are read as JSON when they parse. With ray also ray_address, "
                                                        "replicas, ray_batch_size, chunk_records (docs/scale.md)."),
    # --- pruning -----------------------------------------------------------------------
    search: Optional[str] = S.SEARCH,
    beam_width: Optional[int] = S.BEAM_WIDTH,
    max_steps: Optional[int] = S.MAX_STEPS,
    step_sep: Optional[str] = S.STEP_SEP,
    reduce: Optional[str] = S.REDUCE,
    prm: Optional[str] = S.PRM,
    resample: Optional[str] = S.RESAMPLE,
    search_temperature: Optional[float] = S.SEARCH_TEMPERATURE,
    prune: Optional[str] = P.opt(None, "--prune", help="Stop samples mid-flight: deepprune (redundant traces) | "
                                 "deepconf (low-confidence traces) | adaptive (no new samples once the vote is "
                                 "decided). Default: none."),
    # every pruner's own options (--judge, --keep, ...) are appended by @P.with_pruner_options
    # --- soft thinking -----------------------------------------------------------------
    max_topk: int = typer.Option(SoftParams.max_topk, "--max-topk", min=1, rich_help_panel=SOFT, help="K: concept-token width."),
    noise: Noise = typer.Option(Noise.none, "--noise", rich_help_panel=SOFT, help="Randomness on the top-K weights."),
    gumbel_tau: float = typer.Option(SoftParams.gumbel_tau, "--gumbel-tau", min=0.0, rich_help_panel=SOFT, help="Gumbel-Softmax temperature."),
    dirichlet_alpha: float = typer.Option(SoftParams.dirichlet_alpha, "--dirichlet-alpha", min=0.0, rich_help_panel=SOFT, help="Dirichlet concentration scale (support only)."),
    dirichlet_on: DirichletOn = typer.Option(DirichletOn(SoftParams.dirichlet_on), "--dirichlet-on", rich_help_panel=SOFT,
                                             help="Dirichlet noise over the whole truncated distribution, then its top K "
                                             "(truncated, as both reference implementations), or over the top-K weights only (topk)."),
    gaussian_sigma: float = typer.Option(SoftParams.gaussian_sigma, "--gaussian-sigma", min=0.0, rich_help_panel=SOFT, help="Gaussian noise std on the weights."),
    think_start: Optional[str] = typer.Option(None, "--think-start", rich_help_panel=SOFT,
                                              help="Thinking starts once this text has appeared (prompt or output); default: at the first generated token."),
    think_end: str = typer.Option(SoftParams.think_end, "--think-end", rich_help_panel=SOFT,
                                  help="Text that ends thinking (matched whole on the top-1 chain; inserted on Cold Stop or budget). "
                                  "Models without thinking markers never write </think>: give them --think-end and --soft-budget."),
    cold_stop_entropy: float = typer.Option(SoftParams.cold_stop_entropy, "--cold-stop-entropy", min=0.0, rich_help_panel=SOFT,
                                            help="Cold Stop threshold tau in nats (0 = off)."),
    cold_stop_steps: int = typer.Option(SoftParams.cold_stop_steps, "--cold-stop-steps", min=1, rich_help_panel=SOFT,
                                        help="Cold Stop: consecutive steps below tau that end thinking."),
    soft_budget: int = typer.Option(SoftParams.soft_budget, "--soft-budget", min=0, rich_help_panel=SOFT,
                                    help="Most concept tokens before the think-end string is inserted (0 = no budget). "
                                    "Models without thinking markers need one (and --think-end)."),
    answer_temperature: float = typer.Option(SOFT_ANSWER.temperature, "--answer-temperature", min=0.0, rich_help_panel=ANSWER, help="Answer-phase temperature."),
    answer_top_p: float = typer.Option(SOFT_ANSWER.top_p, "--answer-top-p", min=0.0, max=1.0, rich_help_panel=ANSWER, help="Answer-phase top-p."),
    answer_top_k: int = typer.Option(SOFT_ANSWER.top_k, "--answer-top-k", min=0, rich_help_panel=ANSWER, help="Answer-phase top-k."),
    answer_min_p: float = typer.Option(SOFT_ANSWER.min_p, "--answer-min-p", min=0.0, max=1.0, rich_help_panel=ANSWER, help="Answer-phase min-p."),
    # --- SoftCoT -------------------------------------------------------------------------
    assistant: Optional[str] = typer.Option(None, "--assistant", rich_help_panel=SOFTCOT,
                                            help="Model that writes the soft thoughts [default: the base --model]."),
    projection: Optional[str] = typer.Option(None, "--projection", rich_help_panel=SOFTCOT,
                                             help="Projection checkpoint (ours or the reference's weight/bias file); "
                                             "none: the untrained identity (assistant = base only; not SoftCoT)."),
    thoughts: int = typer.Option(SoftCoTParams.thoughts, "--thoughts", rich_help_panel=SOFTCOT, help="Soft thought (placeholder) count."),
    perturb: Perturb = typer.Option(Perturb.none, "--perturb", rich_help_panel=SOFTCOT,
                                    help="Per-chain diversity: init-tokens (SoftCoT++), gaussian, or none."),
    perturb_sigma: float = typer.Option(SoftCoTParams.perturb_sigma, "--perturb-sigma", min=0.0, rich_help_panel=SOFTCOT,
                                        help="gaussian: noise std on each projected coordinate."),
    per_chain: int = typer.Option(SoftCoTParams.per_chain, "--per-chain", rich_help_panel=SOFTCOT,
                                  help="Samples per chain: -n traces come from ceil(n/M) chains."),
    softcot_template: str = typer.Option("auto", "--softcot-template", rich_help_panel=SOFTCOT,
                                         help="Prompt template of each side: auto (the reference's for Llama 3, "
                                              "Qwen2.5 and Qwen3 tokenizers, ours otherwise) | tts | reference-llama | "
                                              "reference-qwen | reference-qwen3 (docs/softcot.md)."),
    adaptive: Optional[str] = typer.Option(None, "--adaptive", rich_help_panel=P.PANEL, show_default=False,
                                           help="Adaptive sample budget: beta:T or esc:W. Sample each prompt in waves "
                                                "and start no more once its vote is decided; the same as --prune "
                                                "adaptive --rule SPEC (docs/pruning.md). Default: off."),
    pruner_options: Optional[dict] = None,
) -> None:
    """Sample N traces per prompt and write one JSONL record per input record (docs/format.md)."""
    from strategies.generators.build import prepare
    from strategies.runner import GenerateOptions, check_backend, default_batch_size
    from tts_cli.commands._common import parse_engine_args
    from strategies.runner import generate as run
    from strategies.penalties import Penalties
    from strategies import resume as resuming
    from tts_cli import advice, progress
    from strategies.jsonl import (JsonlWriter, Selection, check_input, claim_output, count_lines, existing_ids,
                                  read_records, unique_ids)
    from tts_cli.commands._common import check_max_new_tokens, check_mode_options
    from strategies.models import ModelNotFound, load, load_meta, load_tokenizer

    shard_spec = Selection.parse_shard(shard)
    claim_output(output, inputs=[input])  # not the input, writable, not being written by another tts
    check_input(input, id_field)  # readable, ids unique: before any model work
    check_mode_options(mode.value, noise=noise.value, soft_budget=soft_budget, projection=projection)
    engine_args = parse_engine_args(engine_arg)
    check_backend(backend, mode.value, compile=compile, prune=prune is not None or adaptive is not None,
                  engine_args=engine_args, model=model, search=search is not None)
    search_ctl = S.controller(search, {k: v for k, v in locals().items() if k in S.OPTIONS}, n=samples, seed=seed,
                              mode=mode.value, prune=prune or (adaptive and "adaptive"),
                              prompt_field=prompt_field,
                              penalties=Penalties(repetition_penalty, presence_penalty, frequency_penalty))
    prune_settings = None
    if adaptive is not None:
        if prune not in (None, "adaptive") or "rule" in (pruner_options or {}):
            raise InputError("--adaptive is a pruner of its own (--prune adaptive --rule SPEC): "
                             "give it alone, without --prune or --rule")
        prune, pruner_options = "adaptive", {**(pruner_options or {}), "rule": adaptive}
    if prune is not None:
        prune_settings = P.settings(prune, pruner_options, seed)
        P.warn_no_pruning(prune_settings, samples)
    else:
        P.unused(pruner_options, "no --prune given")
    # the generator's options by parameter name (enums as their values); the library builds it
    options = {k: v.value if isinstance(v, Enum) else v for k, v in locals().items() if k in GENERATOR_OPTIONS}
    prepared = prepare(mode.value, options)   # every check that needs no model, before any loads
    opts = GenerateOptions(n=samples, max_new_tokens=max_new_tokens, stop=list(stop or []), seed=seed,
                           batch_size=batch_size or 64, trace=trace, raw=raw, prompt_field=prompt_field,
                           id_field=id_field, on_error=on_error.value, compile=compile, cuda_graphs=cuda_graphs,
                           system=system, top_logprobs=top_logprobs, backend=backend, engine_args=engine_args,
                           penalties=Penalties(repetition_penalty, presence_penalty, frequency_penalty))
    if repetition_penalty <= 0:
        raise InputError(f"--repetition-penalty {repetition_penalty:g}: must be > 0 (1 = off)")
    if system is not None and raw:
        raise InputError("--system goes through the chat template; it cannot be used with --raw")
    opts.trace = trace or top_logprobs > 0
    if force and not resume:
        raise InputError("--force only applies with --resume")
    if resume and output == "-":
        raise InputError("--resume needs -o/--output FILE (it appends to that file)")
    # order: --shard picks its records, --resume drops those already written, --limit counts the rest
    selection = Selection(shard_spec, existing_ids(output, id_field) if resume and not show_prompt else set(),
                          limit, id_field)
    selected = selection(unique_ids(read_records(input), id_field, input))

    if show_prompt:
        show_first_prompt(selected, model, opts, load_tokenizer)
        return
    try:
        # another engine loads the weights itself: here only the tokenizer and config
        loaded = load(model, device, dtype) if backend == "native" else load_meta(model, device, dtype)
    except ModelNotFound as e:
        raise InputError(str(e)) from None
    check_max_new_tokens(loaded.config, max_new_tokens)  # before decoding, not a silent cut
    generator = prepared.bind(loaded, load, device, dtype)
    # vLLM schedules its own batch (its max_num_seqs); the field records what was asked
    opts.batch_size = batch_size or (default_batch_size(loaded.model, max_new_tokens) if loaded.model is not None else 256)
    if backend in ("vllm", "ray") and batch_size:
        opts.engine_args.setdefault("max_num_seqs", batch_size)
    if resume and not force and selection.done:
        from strategies.runner import run_info

        resuming.check(output, run_info(loaded, generator, opts))
    if mode is Mode.soft:
        advice.soft_mode(loaded.tokenizer, generator.p, samples)
    ctl = P.controller(prune_settings, loaded) if prune_settings is not None else search_ctl
    total = selection.total(count_lines(input))
    bar = progress.Progress(total, quiet, per_record=samples).begin(model=model, device=loaded.device, dtype=loaded.dtype, samples=samples)
    finished = False
    tally = P.Tally()
    try:
        with JsonlWriter(output, append=resume) as out:
            for record in run(selected, loaded, generator, opts, progress=bar, controller=ctl):
                out.write(record)
                bar.record_done()
                tally.add(record)
        finished = True
    finally:
        bar.end(finished)  # a stopped run gets its error line, not a summary
    if ctl is not None:
        print(tally.line(ctl), file=sys.stderr)
    if resume:
        print(f"tts: --resume: skipped {selection.skipped} records already in {output}", file=sys.stderr)
        if selection.skipped and loaded.dtype != "float32":
            print(f"tts: --resume: in {loaded.dtype} a resumed record can differ from an uninterrupted run's "
                  "(rounding depends on the rows batched together); --dtype float32 resumes exactly",
                  file=sys.stderr)


def show_first_prompt(records, model: str, opts, load_tokenizer) -> None:
    """--show-prompt: the first selected record's prompt, rendered, on stderr (only the tokenizer loads)."""
    from strategies.runner import prompt_text
    from strategies.models import ModelNotFound

    for rec in records:
        if rec.error:
            raise InputError(rec.error)
        try:
            tokenizer = load_tokenizer(model)
        except ModelNotFound as e:
            raise InputError(str(e)) from None
        try:
            text, _ = prompt_text(rec.data, tokenizer, opts)
        except ValueError as e:
            raise InputError(f"line {rec.line}: {e}") from None
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        return
    raise InputError("--show-prompt: no record selected")

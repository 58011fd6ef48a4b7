"""Side-by-side throughput: our sampler against transformers' generate(), in one process.

Ratios, not absolute times, are what carry from one machine to another; each run also measures
the machine's float32 matmul peak so tokens/s can be read as a fraction of it.
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable

import torch

from strategies import hf_baseline
from strategies.hf_baseline import Timing, sync

FALLBACK_PROMPTS = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
    "How much in dollars does she make every day at the farmers' market?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "Josh decides to try flipping a house. He buys a house for $80,000 and then puts in $50,000 in repairs. "
    "This increased the value of the house by 150%. How much profit did he make?",
    "James decides to run 3 sprints 3 times a week. He runs 60 meters each sprint. How many total meters does "
    "he run a week?",
]
SUFFIX = " Please reason step by step, and put your final answer within \\boxed{}."


def gsm8k_prompts(n: int) -> list[str]:
    """The first n GSM8K test questions from ../shared/data when present, else built-in copies."""
    import orjson

    here = Path(__file__).resolve().parents[1]
    path = here.parent / "shared" / "data" / "gsm8k_test.jsonl"
    qs = []
    if path.exists():
        with open(path, "rb") as fh:
            for line in fh:
                qs.append(orjson.loads(line)["question"])
                if len(qs) == n:
                    break
    qs = qs or FALLBACK_PROMPTS
    return [q + SUFFIX for q in (qs * n)[:n]]


# Where the benchmark says what it is timing (the command line prints it on stderr); silent here.
log: Callable[[str], None] = lambda message: None
# Two figures that should agree on a quiet machine differing by more than this mark the run noisy.
NOISE = 0.15


def probe(device: str, dtype=torch.float32) -> dict:
    """The machine's state now: a short matmul's GFLOP/s and the 1-minute load average."""
    return {"gflops": round(matmul_peak_gflops(device, dtype, seconds=0.3), 1), "load1": round(os.getloadavg()[0], 2)}


def noise(probes: list[dict], repeats: list[tuple[float, float]] = ()) -> dict:
    """Whether the run can be trusted: the probes' matmul speeds, and each pair of timings of the
    same work (ours before and after the peer), must agree within NOISE (max / min - 1)."""
    spreads = {"probe_spread": _spread([p["gflops"] for p in probes])}
    for k, (a, b) in enumerate(repeats):
        spreads["repeat_spread" if k == 0 else f"repeat_spread_{k}"] = _spread([a, b])
    return {"noisy": any(v > NOISE for v in spreads.values()), **spreads, "probes": probes}


def _spread(values: list[float]) -> float:
    values = [v for v in values if v > 0]
    return round(max(values) / min(values) - 1, 3) if len(values) > 1 else 0.0


def peak_rss_mib() -> dict:
    """Peak resident memory so far: this process (our side, and vLLM's front end when it ran here)
    and its largest finished child (vLLM's engine core)."""
    kib = 1024  # Linux reports ru_maxrss in KiB
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib, 1),
            "peak_rss_children_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib, 1)}


def matmul_peak_gflops(device: str, dtype=torch.float32, size: int | None = None, seconds: float = 1.0) -> float:
    """Square products back to back. 1024 on a CPU; 8192 on a GPU, where a 1024 product takes
    microseconds and the loop would time the host's launches, not the GPU."""
    size = size or (8192 if str(device).startswith("cuda") else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - t0) / 1e9


def chat_ids(tok, text: str) -> list[int]:
    """The prompt exactly as `tts generate` tokenises it (chat template, no extra specials)."""
    from strategies.runner import GenerateOptions, prompt_ids

    return prompt_ids({"prompt": text}, tok, GenerateOptions())


def time_tts(loaded, generator, prompts: list[str], n: int, max_new: int, ignore_eos: bool, batch_size: int,
             seed: int = 0, cuda_graphs: bool = True, compile: bool = False,
             limits: list[int] | None = None, controller=None) -> Timing:
    """Our sampler over the workload (`limits`: each row's own length, prompt by prompt). With CUDA
    graphs or torch.compile the same engine runs it twice and the second run is timed: capturing a
    graph per (rows, span) bucket and compiling are once-per-process costs that a long run
    amortises (`Timing.setup` is the first pass)."""
    from strategies.engine import Engine, Request

    model, tok = loaded.model, loaded.tokenizer
    eng = Engine(model, tok, generator, batch_size=batch_size, max_new_tokens=max_new, seed=seed,
                 ignore_eos=ignore_eos, cuda_graphs=cuda_graphs, compile=compile, controller=controller)
    ids = [chat_ids(tok, p) for p in prompts]
    setup = 0.0
    for timed in ([False, True] if eng.decoder.cuda_graphs or compile else [True]):
        eng.tokens_generated = 0
        sync(model.device)
        t0 = time.perf_counter()
        for _ in eng.run(Request(key=i, prompt_ids=p, n=n, limits=limits and limits[i * n:(i + 1) * n])
                         for i, p in enumerate(ids)):
            pass
        sync(model.device)
        elapsed = time.perf_counter() - t0
        if not timed:
            setup = elapsed
    return Timing(eng.tokens_generated, elapsed, setup)


# --mode search: prompts, rows per prompt (N), beam width (M), most new tokens, step separator
SEARCH_WORKLOAD = (8, 16, 4, 128, "\n")


def bench_search(loaded, batch_size: int = 64) -> dict:
    """Beam search's bookkeeping against plain decoding of the same rows: N rows per prompt decode
    in both, EOS ignored; the search pauses every row at each step separator, scores the partial
    solutions, forks the kept beams and resumes them (keys/values copied out and back). The scorer
    is the scripted stand-in (string counting, no model), so the PRM's own forward is not in the
    time: what remains is what the search adds to decoding. Each side's tokens/s counts every
    token it decoded (dropped beams included); `ratio` = search / plain."""
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.search import SearchParams, method, scorer

    n_prompts, n, width, max_new, sep = SEARCH_WORKLOAD
    prompts = gsm8k_prompts(n_prompts)
    generator = Discrete(DiscreteParams(temperature=0.7))

    def search():
        params = SearchParams(n=n, beam_width=width, step_sep=sep)
        return method("beam")(scorer("scripted:0123456789"), params)

    # one pass each (no CUDA graphs: a search's batch shapes change at every step)
    def timed(controller=None, prompts=prompts, max_new=max_new):
        return time_tts(loaded, generator, prompts, n, max_new, True, batch_size, cuda_graphs=False,
                        controller=controller)

    timed(prompts=prompts[:1], max_new=8)                          # warm-ups
    timed(search(), prompts=prompts[:1], max_new=8)
    log(f"timing plain decoding: {n_prompts} prompts x {n} rows, {max_new} tokens each")
    plain = timed()
    log(f"timing beam search: the same rows, beam width {width}, a step at every {sep!r}")
    ctl = search()
    found = timed(ctl)
    steps = sum(st.steps for st in ctl.stats.values())
    return _report(loaded, "search", {"search": found, "plain": plain}, "search", "plain",
                   extra={"prompts": n_prompts, "rows": n, "beam_width": width, "max_new_tokens": max_new,
                          "step_sep": sep, "scorer": "scripted (no model)", "search_steps": steps,
                          "overhead": round(1 - found.tok_s / plain.tok_s, 4)})


WORKLOADS = {
    # name: (prompts, samples per prompt, max new tokens, ignore EOS, temperature)
    "fixed": (1, 32, 128, True, 0.7),
    "realistic": (4, 16, 256, False, 0.7),
}


def bench_vs_hf(loaded, workload: str, batch_size: int = 64, warmup: bool = True, compile: bool = False) -> dict:
    """Our sampler against generate() on the same prompts and settings, in one process.

    `ratio` is against one generate() call per prompt, `ratio_batched` against all rows in one
    left-padded call; on CUDA also `ratio_static_compile`, against transformers' static cache with
    torch.compile. Every side gets the same warm-up: a short untimed run of each, and a whole
    untimed pass of the workload wherever ours needs one (graph capture, --compile)."""
    from strategies.generators.discrete import Discrete, DiscreteParams

    n_prompts, n, max_new, ignore_eos, temp = WORKLOADS[workload]
    prompts = gsm8k_prompts(n_prompts)
    generator = Discrete(DiscreteParams(temperature=temp))
    ids = [chat_ids(loaded.tokenizer, p) for p in prompts]  # tokenised once, outside every timer
    device = str(loaded.model.device)
    probes = [probe(device, loaded.model.dtype)]
    if warmup:
        log("warming up both sides")
        time_tts(loaded, generator, prompts[:1], 2, 4, True, batch_size)
        hf_baseline.per_prompt(loaded, ids[:1], 2, 4, True, temp)
        hf_baseline.batched(loaded, ids[:2], 2, 4, True, temp)
    log(f"timing ours: {n_prompts} prompts x {n} samples, up to {max_new} tokens")
    timings = {"tts": time_tts(loaded, generator, prompts, n, max_new, ignore_eos, batch_size, compile=compile)}
    cuda = str(loaded.model.device).startswith("cuda")
    if cuda:  # what the CUDA graphs are worth, same run
        timings["tts_eager"] = time_tts(loaded, generator, prompts, n, max_new, ignore_eos, batch_size,
                                        cuda_graphs=False)
    full = timings["tts"].setup > 0  # ours ran the workload once untimed: so does generate()
    probes.append(probe(device, loaded.model.dtype))
    log("timing generate(), one call per prompt")
    timings["hf"] = hf_baseline.per_prompt(loaded, ids, n, max_new, ignore_eos, temp, warmup=full)
    # With one prompt the batched call is the per-prompt call itself: not timed twice.
    if n_prompts > 1:
        log("timing generate(), all rows in one call")
    timings["hf_batched"] = (timings["hf"] if n_prompts == 1 else
                             hf_baseline.batched(loaded, ids, n, max_new, ignore_eos, temp, warmup=full))
    if cuda:  # transformers' own fast path; its compile happens in the untimed first pass
        timings["hf_static_compile"] = hf_baseline.batched(loaded, ids, n, max_new, ignore_eos, temp,
                                                           warmup=True, static=True)
    out = _report(loaded, workload, timings, "tts", "hf",
                  extra={"prompts": n_prompts, "samples": n, "max_new_tokens": max_new, "ignore_eos": ignore_eos,
                         "temperature": temp, "batch_size": batch_size, "compile": compile,
                         "warmup": "whole workload untimed, both sides" if full else "short run, both sides"})
    probes.append(probe(device, loaded.model.dtype))
    out.update(noise(probes))
    for name in ("hf_batched", "hf_static_compile"):
        if name in timings:
            out[name.replace("hf", "ratio", 1)] = round(timings["tts"].tok_s / timings[name].tok_s, 3)
    return out


def bench_soft(loaded, rows: int = 32, max_new: int = 128, batch_size: int = 64, compile: bool = False) -> dict:
    """Soft vs discrete decoding on the same prompt, settings and row count (paper defaults)."""
    from strategies.generators.discrete import Discrete
    from strategies.generators.soft import THINKING as thinking
    from strategies.generators.soft import Soft, SoftParams

    prompts = gsm8k_prompts(1)
    # No think-end, Cold Stop or budget: every step of the measured run is a concept token.
    soft = Soft(SoftParams(thinking=thinking, think_end="\u0000never\u0000", cold_stop_entropy=0.0))
    discrete = Discrete(thinking)
    time_tts(loaded, soft, prompts, 2, 4, True, batch_size)
    time_tts(loaded, discrete, prompts, 2, 4, True, batch_size)
    s = time_tts(loaded, soft, prompts, rows, max_new, True, batch_size, compile=compile)
    d = time_tts(loaded, discrete, prompts, rows, max_new, True, batch_size, compile=compile)
    return _report(loaded, "soft", {"soft": s, "discrete": d}, "soft", "discrete",
                   extra={"rows": rows, "max_new_tokens": max_new, "max_topk": 10, "compile": compile})


def _report(loaded, workload: str, timings: dict[str, Timing], num: str, den: str, extra: dict) -> dict:
    device = str(loaded.model.device)
    params = sum(p.numel() for p in loaded.model.parameters())
    peak = matmul_peak_gflops(device, loaded.model.dtype)
    out = {"workload": workload, "model": loaded.name, "device": device,
           "dtype": str(loaded.model.dtype).removeprefix("torch."), "threads": torch.get_num_threads()}
    for name, t in timings.items():
        out[f"{name}_tok_s"] = round(t.tok_s, 2)
        out[f"{name}_tokens"] = t.tokens
        out[f"{name}_seconds"] = round(t.seconds, 3)
        if t.setup:
            out[f"{name}_first_pass_seconds"] = round(t.setup, 3)
    out["ratio"] = round(timings[num].tok_s / timings[den].tok_s, 3)
    out["matmul_peak_gflops"] = round(peak, 1)
    # 2 FLOPs per parameter per token is the dense-matmul floor of a decode step
    out["peak_fraction"] = round(timings[num].tok_s * 2 * params / (peak * 1e9), 4)
    out.update(peak_rss_mib())
    out.update(extra)
    return out


def bench_softcot(loaded, rows: int = 32, per_chain: int = 8, max_new: int = 128, batch_size: int = 64) -> dict:
    """SoftCoT vs discrete decoding on the same prompt, rows and sampling (T = 1, top-p = 1).

    The softcot time includes everything a run pays for: the assistant's batched forward (here the
    base model itself, identity projection), the projection, and one prefill per chain
    (rows / per_chain chains, init-tokens perturbation)."""
    from strategies.engine import Engine, Request
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.generators.params import SoftCoTParams
    from strategies.generators.softcot import SoftCoT
    from strategies.runner import GenerateOptions
    from strategies.softcot.projection import Projection

    prompt = gsm8k_prompts(1)[0]
    sampling = DiscreteParams()
    proj = Projection.identity(loaded.model.get_input_embeddings().weight.detach())
    softcot = SoftCoT(SoftCoTParams(sampling=sampling, perturb="init-tokens", per_chain=per_chain),
                      loaded.model, loaded.tokenizer, proj, assistant_name=loaded.name)
    discrete = Discrete(sampling)

    def timed(gen, n) -> Timing:
        eng = Engine(loaded.model, loaded.tokenizer, gen, batch_size=batch_size, max_new_tokens=max_new,
                     ignore_eos=True)
        sync(str(loaded.model.device))
        t0 = time.perf_counter()
        req = Request(key=0, prompt_ids=chat_ids(loaded.tokenizer, prompt), n=n)
        reqs = gen.requests(req, {"prompt": prompt}, loaded.tokenizer, GenerateOptions(n=n))
        for _ in eng.run(reqs):
            pass
        sync(str(loaded.model.device))
        return Timing(eng.tokens_generated, time.perf_counter() - t0)

    timed(softcot, 2), timed(discrete, 2)   # warm-up
    s, d = timed(softcot, rows), timed(discrete, rows)
    return _report(loaded, "softcot", {"softcot": s, "discrete": d}, "softcot", "discrete",
                   extra={"rows": rows, "per_chain": per_chain, "chains": -(-rows // per_chain),
                          "max_new_tokens": max_new, "perturb": "init-tokens", "projection": "identity-untrained"})


# --- against vLLM (`tts bench --against vllm`) ---------------------------------------------------
PEER_WORKLOADS = {
    # name: (prompts, samples per prompt, most new tokens, temperature); EOS ignored on both sides
    "fixed": (1, 32, 128, 0.7),        # every row exactly 128 tokens
    "realistic": (4, 16, 256, 0.7),    # each row its own length (trace_lengths), the same on both sides
}


def trace_lengths(rows: int, most: int, seed: int = 0) -> list[int]:
    """Per-row lengths resembling real traces, drawn once from a seeded distribution: lognormal
    with median 150 tokens and sigma 0.5 (a long right tail, as sampled reasoning traces have),
    clipped to [16, most]. Both engines decode exactly these lengths, so they do the same work."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(x) for x in np.clip(np.round(rng.lognormal(np.log(150), 0.5, rows)), 16, most)]


def time_vllm(llm, ids: list[list[int]], n: int, lengths: list[int], temperature: float) -> Timing:
    """vLLM as a user runs it: one `LLM.generate` call with one request per trace (its own seed and
    length, 20 log-probabilities per token, EOS ignored), after a short untimed warm-up."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from strategies.vllm_backend import TOP, stdout_to_stderr

    def params(length, seed):
        return SamplingParams(temperature=temperature, max_tokens=length, ignore_eos=True, logprobs=TOP, seed=seed)

    with stdout_to_stderr():
        llm.generate([TokensPrompt(prompt_token_ids=ids[0])] * 2, [params(4, 0), params(4, 1)], use_tqdm=False)
        prompts = [TokensPrompt(prompt_token_ids=p) for p in ids for _ in range(n)]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, [params(length, j) for j, length in enumerate(lengths)], use_tqdm=False)
        seconds = time.perf_counter() - t0
    return Timing(sum(len(o.outputs[0].token_ids) for o in outs), seconds)


def vllm_side(args: dict, ids: list[list[int]], n: int, lengths: list[int], temperature: float) -> dict:
    """Start vLLM with `args`, time it on the workload (time_vllm), shut it down: what the peer
    side does, in the calling process. `dtype`: what vLLM resolved (its "auto" for the model)."""
    from strategies.vllm_backend import start_llm

    t0 = time.perf_counter()
    llm = start_llm(args)
    startup = time.perf_counter() - t0
    try:
        t = time_vllm(llm, ids, n, lengths, temperature)
        dtype = str(llm.llm_engine.vllm_config.model_config.dtype).removeprefix("torch.")
    finally:
        llm.llm_engine.engine_core.shutdown()
    return {"tokens": t.tokens, "seconds": t.seconds, "startup": startup, "dtype": dtype}


def _vllm_child(queue, *args) -> None:
    try:
        queue.put(("ok", vllm_side(*args)))
    except BaseException as e:  # noqa: BLE001  (reported to the parent as one line)
        queue.put(("error", f"{type(e).__name__}: {e}"))


def vllm_side_in_child(*args) -> dict:
    """vllm_side in a fresh child process, so nothing vLLM sets process-wide (threads, affinity,
    allocator, environment) can touch the process that times our side. Not a multiprocessing
    pool: its workers are daemons, and vLLM starts its engine core as a child of its own."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_vllm_child, args=(queue, *args))
    proc.start()
    try:
        status, result = queue.get()
    finally:
        proc.join()
    if status != "ok":
        from strategies.backend import BackendUnavailable

        raise BackendUnavailable(f"the vLLM side of the benchmark failed: {result}")
    return result


def bench_vs_vllm(loaded, workload: str, batch_size: int = 64, engine_args: dict | None = None,
                  peer_dtype: str | None = None) -> dict:
    """Our sampler and vLLM on the same model, prompts, sampling settings and per-row lengths, one
    after the other: ours in this process, vLLM in a child process (its engine core in its own).
    `peer_dtype`: vLLM's dtype (default ours; "auto": vLLM's own default for the model, the
    comparison a user who leaves both tools at their defaults makes).

    Ours is timed twice, before vLLM starts and after it has shut down, so drift in the machine's
    speed shows; `tts_tok_s` is their mean. vLLM runs as a user would run it (time_vllm), not
    through `--backend vllm`, so none of our per-token bookkeeping is in its time. Each side gets
    one short untimed warm-up; vLLM's start-up (model load, compilation unless enforce_eager) is
    reported, not timed. Both sides compute the signals a run needs: ours all four exactly, vLLM
    the top-20 raw log-probabilities."""
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.vllm_backend import default_engine_args

    n_prompts, n, max_new, temp = PEER_WORKLOADS[workload]
    prompts = gsm8k_prompts(n_prompts)
    ids = [chat_ids(loaded.tokenizer, p) for p in prompts]
    lengths = [max_new] * (n_prompts * n) if workload == "fixed" else trace_lengths(n_prompts * n, max_new)
    generator = Discrete(DiscreteParams(temperature=temp))
    device, dtype = loaded.device, loaded.dtype

    def ours(when: str) -> Timing:
        time_tts(loaded, generator, prompts[:1], 2, 4, True, batch_size)   # warm-up
        log(f"timing ours ({when} vLLM): {len(lengths)} rows, {sum(lengths)} tokens")
        return time_tts(loaded, generator, prompts, n, max_new, True, batch_size, limits=lengths)

    probes = [probe(device, loaded.model.dtype)]
    before = ours("before")
    probes.append(probe(device, loaded.model.dtype))
    args = {**default_engine_args(loaded.source, peer_dtype or dtype, device, 0), **(engine_args or {})}
    log(f"starting vLLM in a child process, then timing it: {len(lengths)} rows, {sum(lengths)} tokens")
    side = vllm_side_in_child(args, ids, n, lengths, temp)
    peer, startup = Timing(side["tokens"], side["seconds"]), side["startup"]
    probes.append(probe(device, loaded.model.dtype))
    after = ours("after")
    probes.append(probe(device, loaded.model.dtype))
    mean = Timing(before.tokens + after.tokens, before.seconds + after.seconds)
    out = _report(loaded, f"{workload} (against vLLM)", {"tts": mean, "vllm": peer}, "tts", "vllm",
                  extra={"peer": "vllm", "prompts": n_prompts, "samples": n, "max_new_tokens": max_new,
                         "lengths": {"min": min(lengths), "median": sorted(lengths)[len(lengths) // 2],
                                     "max": max(lengths), "total": sum(lengths)},
                         "ignore_eos": True, "temperature": temp, "batch_size": batch_size,
                         "tts_before_tok_s": round(before.tok_s, 2), "tts_after_tok_s": round(after.tok_s, 2),
                         "vllm_startup_seconds": round(startup, 1), "vllm_dtype": side["dtype"],
                         "vllm_dtype_asked": args["dtype"],
                         "engine_args": {k: v for k, v in args.items() if k not in ("model", "tokenizer")},
                         "warmup": "one short untimed run, both sides" + (
                             "; ours also a whole untimed pass (CUDA graph capture)" if before.setup else "")})
    out.update(noise(probes, [(before.tok_s, after.tok_s)]))
    out["ratio_vs_vllm"] = out.pop("ratio")
    return out

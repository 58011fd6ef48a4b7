"""`tts bench`: our sampler against transformers' generate(), side by side in one process."""
from __future__ import annotations

import sys
from enum import Enum
from typing import List, Optional

import typer

from strategies.jsonl import InputError
from strategies.models import DTYPE_HELP


class Workload(str, Enum):
    fixed = "fixed"
    realistic = "realistic"


class BenchMode(str, Enum):
    discrete = "discrete"
    soft = "soft"
    softcot = "softcot"
    search = "search"


def bench(
    workload: Workload = typer.Option(Workload.fixed, "--workload", "-w",
                                      help="fixed: 32 samples of one GSM8K prompt, exactly 128 new tokens (EOS ignored). "
                                      "realistic: 4 GSM8K prompts x 16 samples, up to 256 tokens, EOS honoured, T=0.7. "
                                      "Both against one generate(num_return_sequences=n) per prompt (ratio) and all rows "
                                      "in one left-padded generate() (ratio_batched); on CUDA also against generate() "
                                      "with its static cache and torch.compile (ratio_static_compile)."),
    mode: BenchMode = typer.Option(BenchMode.discrete, "--mode",
                                   help="discrete: against generate(); soft: soft vs discrete tokens/s at 32 rows; "
                                   "softcot: SoftCoT (4 chains x 8, assistant = base) vs discrete at 32 rows; "
                                   "search: beam search's bookkeeping (2 prompts x 16 rows, width 4, a step per "
                                   "line, scripted scorer) vs plain decoding of the same rows."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Model to time (see tts generate --model)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Rows decoded together by our sampler."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (auto: cuda when available)."),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    compile: bool = typer.Option(False, "--compile", help="torch.compile our decode step's layers (the one-off "
                                 "compile is in an untimed first pass; see tts generate --compile)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    against: str = typer.Option("hf", "--against", help="hf: transformers' generate(). vllm: vLLM on the same model, "
                                "prompts and settings (vLLM in a child process), EOS ignored on both sides; realistic then gives each "
                                "row its own seeded length; with --dtype auto each side runs at its own default dtype, "
                                "as a user who sets none compares them (docs/scale.md)."),
    engine_arg: Optional[List[str]] = typer.Option(None, "--engine-arg", show_default=False,
                                                   help="KEY=VALUE for vLLM (repeatable; with --against vllm)."),
) -> None:
    """Measure tokens/s of our sampler against transformers' generate() (or soft vs discrete)."""
    import orjson

    from strategies import benchmark
    from strategies.benchmark import bench_search, bench_soft, bench_softcot, bench_vs_hf, bench_vs_vllm
    from strategies.runner import check_backend
    from tts_cli.commands._common import parse_engine_args
    from strategies.models import ModelNotFound, load

    if against not in ("hf", "vllm"):
        raise InputError(f"--against {against!r}: expected hf or vllm")
    if against == "vllm" and mode is not BenchMode.discrete:
        raise InputError("--against vllm times discrete decoding (vLLM has no soft, softcot or search mode)")
    engine_args = parse_engine_args(engine_arg)
    if against == "vllm":
        check_backend("vllm", "discrete", compile=compile, engine_args=engine_args, model=model,
                      option="--against vllm")
    if engine_arg and against != "vllm":
        raise InputError("--engine-arg applies to --against vllm")
    benchmark.log = lambda message: print(f"tts: bench: {message}", file=sys.stderr, flush=True)
    try:
        loaded = load(model, device, dtype)
    except ModelNotFound as e:
        raise InputError(str(e)) from None
    if mode is BenchMode.search:
        result = bench_search(loaded, batch_size=batch_size)
        sides, ratios = ("search", "plain"), {"ratio": "search / plain decoding of the same rows (scripted scorer)"}
    elif mode is BenchMode.softcot:
        result = bench_softcot(loaded, batch_size=batch_size)
        sides, ratios = ("softcot", "discrete"), {"ratio": "softcot / discrete"}
    elif mode is BenchMode.soft:
        result = bench_soft(loaded, batch_size=batch_size, compile=compile)
        sides, ratios = ("soft", "discrete"), {"ratio": "soft / discrete"}
    elif against == "vllm":
        # --dtype auto: each side at its own default (vLLM's for the model), as a user runs them
        result = bench_vs_vllm(loaded, workload.value, batch_size=batch_size, engine_args=engine_args,
                               peer_dtype="auto" if dtype == "auto" else None)
        sides, ratios = ("tts", "vllm"), {"ratio_vs_vllm": "tts / vllm (same rows and lengths, EOS ignored)"}
    else:
        result = bench_vs_hf(loaded, workload.value, batch_size=batch_size, compile=compile)
        sides = ("tts", "tts_eager", "hf", "hf_batched", "hf_static_compile")
        ratios = {"ratio": "tts / hf (one generate() per prompt)",
                  "ratio_batched": "tts / hf_batched (all rows in one left-padded generate())",
                  "ratio_static_compile": "tts / hf_static_compile (static cache + torch.compile)"}
    if result.get("noisy"):
        print(f"tts: warning: the machine was busy while timing (matmul probes differ by "
              f"{result['probe_spread']:.0%}{_repeat(result)}; load average {result['probes'][0]['load1']}): "
              "these figures are not a fair comparison; rerun on a quiet machine", file=sys.stderr)
    if json_out:
        typer.echo(orjson.dumps(result).decode())
        return
    typer.echo(f"workload  {result['workload']}  ({result['model']}, {result['device']}, {result['dtype']}, "
               f"{result['threads']} threads)")
    for name in sides:
        if f"{name}_tok_s" in result:
            typer.echo(f"{name:<18} {result[f'{name}_tok_s']:>9.1f} tok/s  ({result[f'{name}_tokens']} tokens in "
                       f"{result[f'{name}_seconds']:.1f} s)")
    for key, label in ratios.items():
        if key in result:
            typer.echo(f"{key:<21} {result[key]:>6.2f}x  {label}")
    if "vllm_dtype" in result:
        typer.echo(f"vllm dtype {result['vllm_dtype']} (asked {result['vllm_dtype_asked']}; ours {result['dtype']})")
    typer.echo(f"peak      {result['peak_fraction'] * 100:>8.1f}% of a {result['matmul_peak_gflops']:.0f} GFLOP/s matmul")


def _repeat(result: dict) -> str:
    return f", ours before and after the peer by {result['repeat_spread']:.0%}" if "repeat_spread" in result else ""

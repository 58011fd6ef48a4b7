"""`tts show`: one record's samples, for a human."""
from __future__ import annotations

import math
import sys
from enum import Enum
from typing import Optional

import typer

from tts_cli.io import InputError

RED, YELLOW, DIM, BOLD, RESET = "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


class Color(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color else text


def render_trace(sample: dict, tokenizer, threshold: float, color: bool, mixed_below: float = 0.9) -> str:
    """The sample's tokens, low-probability ones highlighted; mixed concept steps as [a .62|b .30]."""
    trace = sample["trace"]
    soft = trace.get("soft") or {}
    start, topk_ids, topk_w = soft.get("start", 0), soft.get("topk_ids", []), soft.get("topk_w", [])
    low = math.log(threshold)
    parts = []
    for t, (tok, lp) in enumerate(zip(trace["ids"], trace["logprob"])):
        step = t - start
        if 0 <= step < len(topk_ids) and topk_w[step] and topk_w[step][0] < mixed_below:
            alts = "|".join(f"{tokenizer.decode([i])} {w:.2f}".replace("\n", "\\n")
                            for i, w in zip(topk_ids[step][:3], topk_w[step][:3]))
            parts.append(_paint(f"[{alts}]", DIM, color))
            continue
        piece = tokenizer.decode([tok])
        if lp < low:
            piece = _paint(piece, RED if lp < low * 2 else YELLOW, color)
        parts.append(piece)
    return "".join(parts)


def _summary(s: dict) -> str:
    keys = ("finish", "n_tokens", "mean_logprob", "entropy", "self_certainty", "confidence", "pred")
    bits = [f"{k}={s[k]}" for k in keys if k in s]
    if "soft" in s:
        bits.append(f"soft_steps={s['soft'].get('steps')} ended_by={s['soft'].get('ended_by')}")
    return "  ".join(bits)


def show(
    file: str = typer.Argument("-", help="JSONL written by tts generate (or aggregate), or - for stdin."),
    id: Optional[str] = typer.Option(None, "--id", help="Record id to show (default: the first record)."),
    sample: Optional[int] = typer.Option(None, "--sample", "-s", help="Only this sample index (default: all)."),
    threshold: float = typer.Option(0.3, "--threshold", min=1e-9, max=1.0,
                                    help="With a trace: highlight tokens whose probability is below this."),
    color: Color = typer.Option(Color.auto, "--color",
                                help="auto: only on a terminal; always: also through a pipe (`| less -R`)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Tokenizer for rendering traces (default: the record's run.model)."),
) -> None:
    """Print one record's samples: text (low-confidence tokens highlighted with --trace output),
    per-sample summaries and finish reasons."""
    from tts_cli.io import iter_objects

    use_color = color is Color.always or (color is Color.auto and sys.stdout.isatty())
    record = None
    for _, obj in iter_objects(file):
        if id is None or str(obj.get("id")) == id:
            record = obj
            break
    if record is None:
        raise InputError(f"no record with id {id!r} in {file}")
    samples = record.get("samples") or []
    if sample is not None:
        samples = [s for s in samples if s.get("i") == sample]
        if not samples:
            raise InputError(f"record {record.get('id')!r} has no sample {sample}")
    tokenizer = None
    if any("trace" in s for s in samples):
        from tts_cli.models import ModelNotFound, load_tokenizer

        try:
            tokenizer = load_tokenizer(model or record.get("run", {}).get("model", "smollm2-135m"))
        except ModelNotFound as e:
            print(f"tts: {e}; showing plain text", file=sys.stderr)

    def out(text: str) -> None:
        # echo strips colour codes whenever stdout is not a terminal unless told otherwise:
        # `--color always` must survive `| less -R`.
        typer.echo(text, color=use_color)

    out(_paint(f"id {record.get('id')}", BOLD, use_color))
    prompt = record.get("prompt") or record.get("messages")
    if prompt:
        out(f"prompt: {str(prompt)[:500]}")
    if "answer" in record:
        out(f"gold: {record['answer']}")
    if "error" in record:
        out(f"error: {record['error']}")
    for name, agg in (record.get("aggregates") or {}).items():
        out(f"{name}: {agg.get('answer')} (confidence {agg.get('confidence')})")
    for s in samples:
        out("")
        out(_paint(f"── sample {s.get('i')}  ", BOLD, use_color) + _summary(s))
        if tokenizer is not None and "trace" in s:
            out(render_trace(s, tokenizer, threshold, use_color))
        else:
            out(s.get("text", ""))

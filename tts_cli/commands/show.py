"""`tts show`: one record's samples, for a human."""
from __future__ import annotations

import math
import sys
from typing import List, Optional

import typer

from tts_cli.commands._common import EXTRACT_HELP, checked_extract, checked_samples
from strategies.jsonl import InputError

RED, YELLOW, DIM, BOLD, RESET = "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[1m", "\x1b[0m"


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


TERMINAL_COLORS = ("auto", "always", "never")


def _tokenizer_for(records: list, model: str | None):
    """The tokenizer that turns trace ids into text, or (None, why not)."""
    from strategies.models import ModelNotFound, load_tokenizer

    if not any(isinstance(s, dict) and "trace" in s for r in records for s in (r.get("samples") or [])):
        return None, None
    name = model or next((r["run"]["model"] for r in records if isinstance(r.get("run"), dict)
                          and r["run"].get("model")), "smollm2-135m")
    try:
        return load_tokenizer(name), None
    except ModelNotFound as e:
        return None, f"{e}: token ids cannot be turned into text, so texts are shown unshaded (pass --model)"


def write_html(file: str, out: str, ids, limit: int, wrong_only: bool, aggregate: str | None, color: str,
               model: str | None, window: int | None, extract: str) -> None:
    """`tts show --html`: select records, render the report (strategies/inspection/html.py), write it."""
    import os

    from strategies.inspection.html import COLORS, render_report, select_records
    from strategies.jsonl import check_output
    from tts_cli.commands._common import records_with_lines

    if color not in COLORS:
        raise InputError(f"--color {color!r}: with --html choose from {', '.join(COLORS)}")
    extract = checked_extract(extract)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(f"--html {out}: no such folder {folder}")
    check_output(out, inputs=[file], option="--html")  # never the JSONL it reads, not a directory
    records, lines = records_with_lines(file)
    sel = select_records(checked_samples(records, lines, file), ids, limit, wrong_only, aggregate)
    notes = []
    if wrong_only and sel.undecidable:
        notes.append(f"--wrong-only: {sel.undecidable} record(s) have no gold answer or no "
                     f"{aggregate or 'aggregate'} entry and are left out")
    if not sel.records:
        why = (" with a wrong aggregate" if wrong_only else "") + (f" and id {' or '.join(ids)}" if ids else "")
        raise InputError(f"no record{why} in {file}" + (f" ({notes[0]})" if notes else ""))
    if sel.matched > len(sel.records):
        notes.append(f"showing {len(sel.records)} of {sel.matched} records (--limit {limit}; --limit 0 for all)")
    tokenizer, why = _tokenizer_for(sel.records, model)
    if why:
        notes.append(why)
    for n in notes:
        print(f"tts: note: {n}", file=sys.stderr)
    source = "stdin" if file in (None, "-") else os.path.basename(file)
    try:
        page = render_report(sel.records, tokenizer, color=color, window=window, extract=extract,
                             title=f"tts trace report: {source}", notes=notes)
    except ValueError as e:  # a malformed record (PoolError names what is wrong)
        raise InputError(f"{file}: {e}") from None
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    size = os.path.getsize(out)
    print(f"tts: wrote {out} ({len(sel.records)} record(s), {size / 1e6:.2f} MB)", file=sys.stderr)


def show(
    file: str = typer.Argument("-", help="JSONL written by tts generate (or aggregate), or - for stdin."),
    id: Optional[List[str]] = typer.Option(None, "--id", help="Record id to show (repeatable with --html; "
                                                              "default: the first record, with --html all)."),
    sample: Optional[int] = typer.Option(None, "--sample", "-s",
                                         help="Only this sample index (default: all; not with --html)."),
    threshold: float = typer.Option(0.3, "--threshold", min=1e-9, max=1.0,
                                    help="With a trace: highlight tokens whose probability is below this "
                                         "(not with --html)."),
    color: Optional[str] = typer.Option(None, "--color",
                                        help="Terminal: auto | always | never (default auto: only on a terminal). "
                                             "With --html, the signal that shades tokens: confidence | entropy | "
                                             "self-certainty | logprob (default confidence)."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Tokenizer for rendering traces (default: the record's run.model)."),
    html: Optional[str] = typer.Option(None, "--html",
                                       help="Write a self-contained HTML trace report here instead of printing."),
    limit: int = typer.Option(20, "--limit", min=0, help="With --html: at most this many records (0 = all)."),
    wrong_only: bool = typer.Option(False, "--wrong-only",
                                    help="Only records whose --aggregate answer is wrong (in the terminal: the first such record)."),
    aggregate: Optional[str] = typer.Option(None, "--aggregate",
                                            help="With --wrong-only: the aggregate label to judge "
                                                 "(default: each record's first)."),
    window: Optional[int] = typer.Option(None, "--window", min=1,
                                         help="With --html: DeepConf window whose lowest-confidence stretch is "
                                              "outlined (default: a recorded deepconf aggregate's, else 2048)."),
    extract: str = typer.Option("auto", "--extract", help="With --html: " + EXTRACT_HELP),
) -> None:
    """Print one record's samples: text (low-confidence tokens highlighted with --trace output),
    per-sample summaries and finish reasons. --html writes a report of many records instead."""
    from strategies.jsonl import iter_objects

    if html is not None and sample is not None:
        raise InputError("--sample applies to the terminal view; the --html report shows every sample")
    if html is not None:
        return write_html(file, html, id, limit, wrong_only, aggregate, color or "confidence", model, window, extract)
    if color is None:
        color = "auto"
    if color not in TERMINAL_COLORS:
        raise InputError(f"--color {color!r}: choose from {', '.join(TERMINAL_COLORS)} "
                         "(signal names such as confidence go with --html)")
    use_color = color == "always" or (color == "auto" and sys.stdout.isatty())
    from strategies.inspection.html import aggregate_is_wrong, confidence_text

    record, undecidable = None, 0
    for line, obj in iter_objects(file):
        if not id or str(obj.get("id")) in id:
            wrong = aggregate_is_wrong(obj, aggregate) if wrong_only else True
            undecidable += wrong is None
            if wrong:
                record = next(checked_samples([obj], [line], file))
                break
    if record is None:
        what = " with a wrong aggregate" if wrong_only else ""
        what += f" with id {' or '.join(id)!r}" if id else ""
        note = (f" ({undecidable} record(s) have no gold answer or no {aggregate or 'aggregate'} entry)"
                if undecidable else "")
        raise InputError(f"no record{what} in {file}{note}")
    samples = record.get("samples") or []
    if sample is not None:
        samples = [s for s in samples if s.get("i") == sample]
        if not samples:
            raise InputError(f"record {record.get('id')!r} has no sample {sample}")
    tokenizer = None
    if any("trace" in s for s in samples):
        from strategies.models import ModelNotFound, load_tokenizer

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
        out(f"{name}: {agg.get('answer')} (confidence {confidence_text(agg)})")
    for s in samples:
        out("")
        out(_paint(f"── sample {s.get('i')}  ", BOLD, use_color) + _summary(s))
        if tokenizer is not None and "trace" in s:
            out(render_trace(s, tokenizer, threshold, use_color))
        else:
            out(s.get("text", ""))

"""`tts plot signals|trace`: figures of a run's per-sample signals (library: strategies/inspection)."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from tts_cli.commands._common import EXTRACT_HELP, checked_extract
from strategies.jsonl import InputError

plot_app = typer.Typer(
    help="Figures of a run's confidence signals: correct vs incorrect distributions with their AUROC "
         "(signals), one record's signal over token position (trace).",
    no_args_is_help=True,
)

TRACE_SIGNALS = ("confidence", "entropy", "self_certainty", "logprob")


def _checked_output(path: Optional[str], input: str) -> None:
    """-o: an image format matplotlib writes, a writable path that is not the input."""
    import os

    from tts_cli.commands._common import checked_plot_path

    if path:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.exists(folder):
            raise InputError(f"-o {path}: no such folder {folder}")
        checked_plot_path(path, "-o", inputs=[input])


@plot_app.command("signals")
def signals(
    input: str = typer.Argument("-", help="Aggregated JSONL (`tts aggregate` output) with gold `answer`, or - for stdin."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write the figure here (PNG, PDF, SVG)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"auroc": {signal: value}, "samples": N} on stdout.'),
    window: int = typer.Option(2048, "--window", min=1,
                               help="Sliding-window length of the lowest-window confidence (DeepConf's default)."),
    extract: str = typer.Option("auto", "--extract", help=EXTRACT_HELP),
) -> None:
    """Distributions of mean confidence, lowest-window confidence, self-certainty and mean logprob
    over correct vs incorrect samples, with each signal's AUROC for telling them apart (a higher
    signal predicts correct; ties count half; null when one side is empty)."""
    from strategies.inspection.signals import SIGNALS, labelled_signals, signal_aurocs
    from tts_cli.commands._common import checked_samples, records_with_lines, translate_pool_errors
    from strategies.jsonl import dumps

    if not output and not as_json:
        raise InputError("nothing to do: give -o FILE for the figure and/or --json for the AUROCs")
    _checked_output(output, input)
    records, lines = records_with_lines(input)
    records = checked_samples(records, lines, input)
    with translate_pool_errors(input, lines):
        table = labelled_signals(records, window=window, extract=checked_extract(extract))
    for reason, count in table.skipped.items():
        if count:
            print(f"tts: note: skipped {count} record(s): {reason.replace('_', ' ')}", file=sys.stderr)
    if table.size == 0:
        raise InputError("no samples with a gold answer: `tts plot signals` needs records with `samples` and `answer`")
    n_right = int(table.correct.sum())
    if n_right in (0, table.size):
        print(f"tts: note: all {table.size} samples are {'incorrect' if n_right == 0 else 'correct'}; "
              "AUROC is undefined (null)", file=sys.stderr)
    for name in SIGNALS:
        missing = int(sum(v != v for v in table.values[name]))
        if missing:
            why = " (needs `tts generate --trace`)" if name == "min_window_confidence" else ""
            print(f"tts: note: {missing} of {table.size} samples have no {name}{why}", file=sys.stderr)
    if output:
        from strategies.inspection.plots import plot_signals

        aurocs = plot_signals(table, output)
        print(f"tts: wrote {output}", file=sys.stderr)
    else:
        aurocs = signal_aurocs(table)
    if as_json:
        sys.stdout.buffer.write(dumps({"auroc": aurocs, "samples": table.size}) + b"\n")


@plot_app.command("trace")
def trace(
    input: str = typer.Argument("-", help="JSONL from `tts generate --trace` (aggregated or not), or - for stdin."),
    id: Optional[str] = typer.Option(None, "--id", help="Record id (default: the first record)."),
    output: str = typer.Option(..., "--output", "-o", help="Write the figure here (PNG, PDF, SVG)."),
    signal: str = typer.Option("confidence", "--signal",
                               help="Per-token signal: confidence | entropy | self_certainty | logprob."),
    smooth: int = typer.Option(16, "--smooth", min=1, help="Trailing mean over this many tokens (1 = raw values)."),
    extract: str = typer.Option("auto", "--extract", help=EXTRACT_HELP),
) -> None:
    """One record's per-token signal over token position, a line per sample: green correct, red
    incorrect (grey when the record has no gold answer)."""
    import numpy as np

    from strategies.inspection.plots import plot_trace
    from strategies.inspection.signals import group_record
    from strategies.jsonl import iter_objects

    signal = signal.replace("-", "_")
    if signal not in TRACE_SIGNALS:
        raise InputError(f"--signal {signal!r}: choose from {', '.join(TRACE_SIGNALS)}")
    extract = checked_extract(extract)
    _checked_output(output, input)
    record = next((obj for _, obj in iter_objects(input) if id is None or str(obj.get("id")) == id), None)
    if record is None:
        raise InputError(f"no record with id {id!r} in {input}" if id is not None else f"no record in {input}")
    samples = record.get("samples")
    if not isinstance(samples, list) or not samples:
        raise InputError(f"record {record.get('id')!r} has no samples")
    with_trace = [j for j, s in enumerate(samples)
                  if isinstance(s, dict) and isinstance((s.get("trace") or {}).get(signal), list)]
    if not with_trace:
        raise InputError(f"record {record.get('id')!r} has no per-token {signal} (samples[].trace): "
                         "rerun `tts generate` with --trace")
    try:
        grouped = group_record(record, extract)
    except ValueError as e:
        raise InputError(f"record {record.get('id')!r}: {e}") from None
    if grouped.gold is None:
        print("tts: note: the record has no gold `answer`; lines are grey", file=sys.stderr)
    series = [(samples[j].get("i", j), np.asarray(samples[j]["trace"][signal], dtype=np.float64),
               grouped.sample_correct(j)) for j in with_trace]
    plot_trace(series, output, signal, smooth,
               title=f"record {record.get('id')}: {signal} over the trace, {len(series)} samples")
    print(f"tts: wrote {output}", file=sys.stderr)

"""`tts aggregate`: turn N sampled answers per record into one answer per method."""
from __future__ import annotations

from typing import List, Optional

import typer

from tts_cli.commands._common import (
    EXTRACT_HELP, JOBS_HELP, METHODS_HELP, STOP_HELP, TRUNCATED_HELP, Truncated, checked_extract, checked_samples,
    default_jobs, methods_or_error, records_with_lines, stop_markers, translate_pool_errors,
)


def aggregate(
    input: str = typer.Argument("-", help="`tts generate` output (JSONL), or - for stdin."),
    output: str = typer.Option("-", "-o", "--output", help="Output JSONL file, or - for stdout."),
    method: List[str] = typer.Option(..., "--method", "-a",
                                     help="Aggregator NAME or NAME:key=value,... (repeatable; see above)."),
    opt: Optional[List[str]] = typer.Option(None, "--opt",
                                            help="key=value for every chosen method that has the option, "
                                                 "or NAME.key=value (repeatable). Default: none."),
    extract: str = typer.Option("auto", "--extract", help=EXTRACT_HELP),
    truncated: Truncated = typer.Option(Truncated.marked, "--truncated", help=TRUNCATED_HELP),
    stop_at: Optional[List[str]] = typer.Option(None, "--stop-at", help=STOP_HELP),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help=JOBS_HELP),
) -> None:
    from strategies.aggregators.api import aggregate_records
    from strategies.jsonl import JsonlWriter, claim_output

    claim_output(output, inputs=[input])
    methods = methods_or_error(method, opt or [])
    records, lines = records_with_lines(input)
    records = checked_samples(records, lines, input)
    with JsonlWriter(output) as out, translate_pool_errors(input, lines):
        for rec in aggregate_records(records, methods, checked_extract(extract), jobs=default_jobs(jobs),
                                     truncated=truncated.value, stop=stop_markers(stop_at)):
            out.write(rec)


aggregate.__doc__ = (
    "Add `pred` to every sample and `aggregates` (one answer per method) to `tts generate` records."
    "\n\n`aggregates` = {NAME: {answer, confidence, scores, used, opts}}; a sample that already has "
    "`pred` keeps it. See docs/aggregators.md.\n\n\b\n"
    "Methods (-a NAME, or NAME:key=value,... to give one method its own options):\n" + METHODS_HELP
)

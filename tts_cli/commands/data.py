"""`tts data`: turn a benchmark file into prompt JSONL for `tts generate`."""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from strategies.datasets import FORMATS, TEMPLATE_HELP

Dataset = Enum("Dataset", {name: name for name in [*FORMATS, "jsonl"]}, type=str)


def data(
    dataset: Dataset = typer.Argument(..., help="Benchmark format: gsm8k (question, answer '... #### N'), "
                                                "math (problem, answer), mawps (input, target), aime / amc "
                                                "(problem, answer), jsonl (any: see the --*-field options)."),
    file: str = typer.Argument(..., help="The benchmark JSONL file, or - for stdin."),
    output: str = typer.Option("-", "-o", "--output", help="Output JSONL file, or - for stdout."),
    template: str = typer.Option("boxed", "--template", "-t",
                                 help="Prompt template: " + "; ".join(f"{k}: {v}" for k, v in TEMPLATE_HELP.items()) + "."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Only the first N records. Default: all."),
    question_field: str = typer.Option("question", "--question-field", help="jsonl: field holding the question."),
    answer_field: str = typer.Option("answer", "--answer-field", help="jsonl: field holding the gold answer."),
    id_field: str = typer.Option("id", "--id-field", help="jsonl: field holding the id (missing: the 1-based index)."),
    on_error: str = typer.Option("fail", "--on-error",
                                 help="A bad line (not JSON, no question, a missing, list-valued or unmarked gold answer): "
                                      "fail: stop with an error naming it; skip: leave it out with a warning and go on."),
) -> None:
    """Turn a benchmark file into prompt JSONL: id, prompt (question in a template), gold answer."""
    import sys

    from strategies.datasets import convert
    from strategies.jsonl import InputError, JsonlWriter, claim_output

    if on_error not in ("fail", "skip"):
        raise InputError(f"--on-error {on_error!r}: choose fail or skip")
    claim_output(output, inputs=[file])
    skipped = []

    def skip(why: str) -> None:
        skipped.append(why)
        print(f"tts: warning: {why} (skipped)", file=sys.stderr)

    with JsonlWriter(output) as out:
        for rec in convert(dataset.value, file, template, limit, question_field, answer_field, id_field,
                           on_bad=skip if on_error == "skip" else None):
            out.write(rec)
    if skipped:
        print(f"tts: warning: {len(skipped)} bad line(s) left out", file=sys.stderr)


data.__doc__ += (
    "\n\n`id` is the dataset's own id, else the 1-based index; the gold `answer` is normalised as "
    "`tts eval` compares it (GSM8K's '#### 18' gives '18'); small metadata fields (MATH's subject, "
    "level) are kept."
)

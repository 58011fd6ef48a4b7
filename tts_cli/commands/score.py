"""`tts score`: add a reward model's score to every sample of `tts generate` records."""
from __future__ import annotations

import sys
from enum import Enum
from typing import Optional

import typer

from strategies.jsonl import InputError


class Kind(str, Enum):
    orm = "orm"
    prm = "prm"


class Reduce(str, Enum):
    last = "last"
    min = "min"
    prod = "prod"
    mean = "mean"


def unescape(text: str) -> str:
    """\\n, \\t and \\\\ in an option value (a blank line is hard to type as an argument)."""
    out, k = [], 0
    while k < len(text):
        if text[k] == "\\" and k + 1 < len(text) and text[k + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[k + 1]])
            k += 2
        else:
            out.append(text[k])
            k += 1
    return "".join(out)


def score(
    input: str = typer.Argument("-", help="`tts generate` output (JSONL), or - for stdin."),
    output: str = typer.Option("-", "-o", "--output", help="Output JSONL file, or - for stdout."),
    rm: str = typer.Option(..., "--rm", help="Reward model: a local Hugging Face directory, or a hub id already "
                                             "in the local cache (nothing is downloaded)."),
    kind: Optional[Kind] = typer.Option(None, "--kind", help="orm | prm; checked against the model's "
                                        "architecture [default: read from the model's config]."),
    reduce: Reduce = typer.Option(Reduce.last, "--reduce", help="PRM: how step scores become one reward."),
    step_sep: str = typer.Option("\\n\\n", "--step-sep", help="PRM: the text between steps (\\n, \\t read as "
                                 "escapes; the default is a blank line)."),
    tag: Optional[str] = typer.Option(None, "--tag", help="PRM: the text put after each step and read there "
                                      "[default: the format's, ' ки' (step-tag) or '<extra_0>' (token-class)]."),
    good: str = typer.Option("+", "--good", help="Step-tag PRM: the token meaning a good step."),
    bad: str = typer.Option("-", "--bad", help="Step-tag PRM: the token meaning a bad step."),
    label: Optional[str] = typer.Option(None, "--label", help="Classifier RMs with 2+ labels: the positive label "
                                        "(index or name) [default: the last label (ORM), 1 (token-class PRM)]."),
    system: Optional[str] = typer.Option(None, "--system", help="Chat-template RMs: a system message put before "
                                         "the prompt [default: none]."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Samples per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (auto: cuda when available)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto | float32 | bfloat16 | float16 (auto: bfloat16 on CUDA, "
                              "float32 on CPU)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Run the Python files a checkpoint ships for its own architecture "
                                                "(Qwen2.5-Math-PRM needs them); read them first."),
    resume: bool = typer.Option(False, "--resume", help="Skip ids already in --output and append to it."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress (it is plain lines when stderr is not a terminal)."),
) -> None:
    """Add `reward` (and, from a PRM, `step_rewards`) to every sample, and a `score` object to the
    record naming the model, format, reduction and separator. Every other field is kept. Formats:
    sequence-classification ORMs, step-tag PRMs (Math-Shepherd) and token-classification PRMs
    (Qwen2.5-Math-PRM). Then `tts aggregate -a best-of-n -a weighted-best-of-n`. See docs/verifiers.md."""
    from strategies.jsonl import JsonlWriter, Selection, count_lines, existing_ids, read_records
    from strategies.resume import first_difference
    from tts_cli import progress
    from verifiers.rm import RewardModelError, load_reward_model
    from verifiers.rm.records import RecordError, score_records

    if resume and output == "-":
        raise InputError("--resume needs -o/--output FILE (it appends to that file)")
    sep = unescape(step_sep)
    if not sep:
        raise InputError("--step-sep: must not be empty")
    try:
        model = load_reward_model(rm, kind.value if kind else None, device, dtype, trust_remote_code,
                                  **_format_opts(rm, kind, tag, good, bad, label, system, sep))
    except RewardModelError as e:
        raise InputError(str(e)) from None
    done = existing_ids(output) if resume else set()
    if done:
        _check_resume(output, model, rm, reduce.value, sep, first_difference)
    selection = Selection(done=done)

    def selected():
        for rec in selection(read_records(input)):
            if rec.error:
                raise InputError(rec.error)
            yield rec.line, rec.data

    total = selection.total(count_lines(input))
    bar = progress.Progress(total, quiet, command="score").begin(
        rm=rm, format=model.name, device=str(model.model.device), dtype=str(model.model.dtype).removeprefix("torch."))
    name = "<stdin>" if input in (None, "-") else input
    finished = False
    try:
        with JsonlWriter(output, append=resume) as out:
            for rec in score_records(selected(), model, rm, reduce=reduce.value, step_sep=sep,
                                     batch_size=batch_size, on_tokens=bar.update):
                out.write(rec)
                bar.record_done()
        finished = True
    except RecordError as e:
        raise InputError(f"{name} line {e.line}: {e}") from None
    finally:
        bar.end(finished)
    if resume:
        print(f"tts: --resume: skipped {selection.skipped} records already in {output}", file=sys.stderr)


def _format_opts(rm, kind, tag, good, bad, label, system, sep) -> dict:
    """The options of the model's format that were given; an option the format lacks is an error
    only when it was set away from its default."""
    from verifiers.rm.base import RewardModelError, config_json, locate, pick_format

    cls = pick_format(rm, config_json(locate(rm)), kind.value if kind else None)
    given = {"tag": tag, "good": None if good == "+" else good, "bad": None if bad == "-" else bad,
             "label": label, "system": system}
    flags = {"tag": "--tag", "good": "--good", "bad": "--bad", "label": "--label", "system": "--system"}
    for key, value in given.items():
        if value is not None and key not in cls.defaults:
            raise RewardModelError(f"{flags[key]} does not apply to a {cls.name} reward model")
    opts = {k: v for k, v in given.items() if k in cls.defaults}
    if "join" in cls.defaults:
        opts["join"] = sep  # the steps are put back together as the policy wrote them
    return opts


def _check_resume(output, model, rm, reduce, sep, first_difference) -> None:
    """An appended file must read as one scoring: the `score` objects already there must match."""
    import orjson

    new = {"rm": rm, "kind": model.kind, **model.info()}
    if model.kind == "prm":
        new.update(reduce=reduce, step_sep=sep)
    with open(output, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                old = orjson.loads(raw).get("score")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(old, dict):
                diff = first_difference(old, new)
                if diff:
                    raise InputError(f"--resume: {output} line {lineno} was scored with other settings ({diff})")

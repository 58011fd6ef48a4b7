"""`tts prune`: replay a pruner on a stored `tts generate --trace` run, or rate DeepPrune's judges."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from tts_cli.commands import _prune_opts as P
from strategies.jsonl import InputError


@P.with_pruner_options
def prune(
    input: str = typer.Argument("-", help="`tts generate --trace` output (JSONL, unpruned), or - for stdin."),
    output: str = typer.Option("-", "-o", "--output", help="Output JSONL file, or - for stdout."),
    method: Optional[str] = typer.Option(None, "--method", help="deepprune | deepconf | adaptive (the replayed pruner)."),
    judge_auroc: bool = typer.Option(False, "--judge-auroc",
                                     help="Instead of pruning: per judge (--judge a,b,...), AUROC and TNR at "
                                          "FNR 0.2 over same-prompt sample pairs labelled by answer equivalence."),
    seed: Optional[int] = typer.Option(None, "--seed", help="DeepPrune's clustering seed [default: the run's --seed]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Slots of the replayed scheduler [default: the run's batch size]."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model whose tokenizer decodes the traces "
                                        "(and the llm judge's default) [default: the run's model]."),
    pruner_options: Optional[dict] = None,
) -> None:
    """Cut each sample of a stored run back to where `tts generate --prune METHOD` would have stopped it
    (same decisions for the same samples, seed and options) and report the tokens saved; or, with
    --judge-auroc, rate the DeepPrune judges on the run. See docs/pruning.md."""
    from strategies.jsonl import JsonlWriter, claim_output, iter_objects

    claim_output(output, inputs=[input])
    if judge_auroc == (method is not None):
        raise InputError("give exactly one of --method deepprune|deepconf|adaptive and --judge-auroc")
    given = dict(pruner_options or {})
    records = [obj for _, obj in iter_objects(input)]
    run = next((r.get("run") for r in records if isinstance(r.get("run"), dict)), {}) or {}
    run_seed = run.get("seed", 0) if seed is None else seed
    if judge_auroc:  # the judges of DeepPrune, rated: its options only, --judge a list
        judges = [j.strip() for j in (given.pop("judge", None) or "ngram").split(",") if j.strip()]
        all_settings = [P.settings("deepprune", {**given, "judge": j}, run_seed) for j in judges or [""]]
    else:
        all_settings = [P.settings(method, given, run_seed)]
    tokenizer, loaded = _model(model or run.get("model"), need_model=any(
        getattr(s, "judge", None) == "llm" and not s.judge_model for s in all_settings))
    if not judge_auroc:  # once every error is ruled out: a warning, not a line before an error
        most = max((len(r["samples"]) for r in records if isinstance(r.get("samples"), list)), default=0)
        P.warn_no_pruning(all_settings[0], most, "--method deepconf on records of at most")
    with JsonlWriter(output) as out:
        if judge_auroc:
            from strategies.pruners.auroc import judge_report, pairs_of
            from strategies.pruners.judges import make_judge

            try:
                pairs, labels, prompts = pairs_of(records, all_settings[0].prefix, tokenizer)
                for s in all_settings:
                    out.write(judge_report(s.judge, make_judge(s, loaded), pairs, labels, prompts))
            except ValueError as e:
                raise InputError(str(e)) from None
            return
        from strategies.pruners.replay import TraceError, replay

        ctl = P.controller(all_settings[0], loaded)
        used = full = 0
        try:
            for rec in replay(records, tokenizer, ctl, batch_size=batch_size or run.get("batch_size") or 64,
                              stop=run.get("stop") or ()):
                out.write(rec)
                used += rec.get("prune", {}).get("tokens", 0)
                full += rec.get("prune", {}).get("tokens_full", 0)
        except TraceError as e:
            raise InputError(str(e)) from None
    if full:
        print(P.summary("prune", used, full, ctl), file=sys.stderr)


def _model(name, need_model: bool):
    from strategies.models import ModelNotFound, load, load_tokenizer

    if not name:
        raise InputError("the input names no model (run.model); give --model")
    try:
        if need_model:
            loaded = load(name, "cpu", "float32")
            return loaded.tokenizer, loaded
        return load_tokenizer(name), None
    except ModelNotFound as e:
        raise InputError(str(e)) from None

"""`tts prune`: replay a pruner on a stored `tts generate --trace` run, or rate DeepPrune's judges."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from tts_cli.commands import _prune_opts as P
from strategies.jsonl import InputError


def prune(
    input: str = typer.Argument("-", help="`tts generate --trace` output (JSONL, unpruned), or - for stdin."),
    output: str = typer.Option("-", "-o", "--output", help="Output JSONL file, or - for stdout."),
    method: Optional[str] = typer.Option(None, "--method", help="deepprune | deepconf (the replayed pruner)."),
    judge_auroc: bool = typer.Option(False, "--judge-auroc",
                                     help="Instead of pruning: per judge (--judge a,b,...), AUROC and TNR at "
                                          "FNR 0.2 over same-prompt sample pairs labelled by answer equivalence."),
    seed: Optional[int] = typer.Option(None, "--seed", help="DeepPrune's clustering seed [default: the run's --seed]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="Slots of the replayed scheduler [default: the run's batch size]."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model whose tokenizer decodes the traces "
                                        "(and the llm judge's default) [default: the run's model]."),
    judge: str = P.JUDGE, prefix: str = P.PREFIX, reasoning_words: Optional[str] = P.REASONING_WORDS,
    k1: int = P.K1, tau: float = P.TAU, max_clusters: int = P.MAX_CLUSTERS, k2: int = P.K2,
    survivors: str = P.SURVIVORS, ngram: int = P.NGRAM, judge_model: Optional[str] = P.JUDGE_MODEL,
    judge_labels: str = P.JUDGE_LABELS, warmup: int = P.WARMUP, keep: float = P.KEEP, window: int = P.WINDOW,
    consensus: Optional[float] = P.CONSENSUS,
) -> None:
    """Cut each sample of a stored run back to where `tts generate --prune METHOD` would have stopped it
    (same decisions for the same samples, seed and options) and report the tokens saved; or, with
    --judge-auroc, rate the DeepPrune judges on the run. See docs/pruning.md."""
    from strategies.jsonl import JsonlWriter, claim_output, iter_objects

    claim_output(output, inputs=[input])
    if judge_auroc == (method is not None):
        raise InputError("give exactly one of --method deepprune|deepconf and --judge-auroc")
    records = [obj for _, obj in iter_objects(input)]
    run = next((r.get("run") for r in records if isinstance(r.get("run"), dict)), {}) or {}
    judges = [j.strip() for j in judge.split(",") if j.strip()] if judge_auroc else [judge]
    common = dict(prefix=prefix, reasoning_words=reasoning_words, k1=k1, tau=tau, max_clusters=max_clusters, k2=k2,
                  survivors=survivors, ngram=ngram, judge_model=judge_model, judge_labels=judge_labels,
                  warmup=warmup, keep=keep, window=window, consensus=consensus,
                  seed=run.get("seed", 0) if seed is None else seed)
    all_settings = [P.settings(method or "deepprune", judge=j, **common) for j in judges or [""]]
    tokenizer, loaded = _model(model or run.get("model"), need_model=any(
        s.judge == "llm" and not s.judge_model and (judge_auroc or s.method == "deepprune") for s in all_settings))
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
        print(f"tts prune: {used} of {full} tokens ({100 * (full - used) / full:.1f}% saved)", file=sys.stderr)


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

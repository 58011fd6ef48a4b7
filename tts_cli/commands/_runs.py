"""`tts eval A B ... --x tokens|flops|samples`: many runs on one cost axis (the library is
strategies.evaluation.runs; this reads the files, reports what it dropped, prints)."""
from __future__ import annotations

import sys

from strategies.jsonl import InputError
from tts_cli.commands._common import records_with_lines, translate_pool_errors


def load_runs(inputs: list[str], labels: list[str] | None, methods, extract: str, truncated: str):
    """Every file as a labelled Run, restricted to the problems all share; what was dropped and
    why goes to stderr."""
    from strategies.evaluation.core import common_labels
    from strategies.aggregators.api import method_from_entry
    from strategies.evaluation.runs import common_problems, default_label, load_run

    if labels and len(labels) != len(inputs):
        raise InputError(f"--label given {len(labels)} time(s) for {len(inputs)} input file(s); give one per file or none")
    if inputs.count("-") > 1:
        raise InputError("stdin (-) can be only one of the input files")
    runs = []
    for j, path in enumerate(inputs):
        stream, lines = records_with_lines(path)
        with translate_pool_errors(path, lines):
            records = list(stream)
            label = labels[j] if labels else default_label("<stdin>" if path == "-" else path, records)
            run = load_run(records, label, [m for _, m in methods or []], extract, truncated)
        for reason, count in run.skipped.items():
            if count:
                print(f"tts: warning: {label}: dropped {count} record(s): {reason.replace('_', ' ')}", file=sys.stderr)
        if not run.problems:
            raise InputError(f"{path}: no record has both `samples` and a gold `answer`")
        if methods:
            run.methods = list(methods)
        else:
            shared = common_labels(run.problems)
            try:
                run.methods = [(lab, method_from_entry(lab, run.problems[0].aggregates[lab])) for lab in shared]
            except ValueError as e:
                raise InputError(f"{path}: cannot re-aggregate the recorded methods: {e}") from None
            if not run.methods:
                raise InputError(f"{path}: no recorded `aggregates` common to all records; run `tts aggregate` or pass -a")
        runs.append(run)
    runs, dropped = common_problems(runs)
    for label, count in dropped.items():
        if count:
            print(f"tts: warning: {label}: dropped {count} problem(s) not in every run", file=sys.stderr)
    if not runs[0].problems:
        raise InputError("the runs share no problem (record ids)")
    return runs, dropped


def replay_runs(runs, specs: list[str], ks, repeats, seed, bootstrap, extract, truncated) -> list:
    """(run, label, curve) for every --replay spec on every unpruned run."""
    from strategies.evaluation.core import default_ks
    from strategies.evaluation.replayed import parse_replay, replay_curve
    from strategies.models import ModelNotFound, load, load_tokenizer
    from strategies.pruners.replay import TraceError

    try:
        settings = [(spec, parse_replay(spec)) for spec in specs]
    except ValueError as e:
        raise InputError(str(e)) from None
    out = []
    for run in runs:
        if run.pruned:
            print(f"tts: warning: --replay: {run.label} is already pruned; replay needs an unpruned run",
                  file=sys.stderr)
            continue
        info = next((r.get("run") for r in run.records if isinstance(r.get("run"), dict)), {}) or {}
        if not info.get("model"):
            raise InputError(f"--replay: {run.label} names no model (run.model) whose tokenizer decodes its traces")
        for spec, s in settings:
            try:
                loaded = (load(info["model"], "cpu", "float32")
                          if s.method == "deepprune" and s.judge == "llm" and not s.judge_model else None)
                tok = loaded.tokenizer if loaded else load_tokenizer(info["model"])
                run_ks = ks or default_ks(max(p.pool.size for p in run.problems))
                c = replay_curve(run, s, run_ks, tok, repeats=repeats, seed=seed, bootstrap=bootstrap,
                                 loaded=loaded, extract=extract, truncated=truncated)
            except (TraceError, ModelNotFound, ValueError) as e:
                raise InputError(f"--replay {spec}: {run.label}: {e}") from None
            out.append((run, f"{run.label} + {spec}", c))
    return out


def evaluate_runs(inputs, labels, x, ks, repeats, seed, bootstrap, plot, methods, extract, truncated, jobs,
                  as_json, replay=()) -> None:
    from strategies.evaluation.compute import CostError
    from strategies.evaluation.runs import cost_curves, cost_table, plot_cost
    from strategies.jsonl import dumps

    from strategies.evaluation.compute import require

    runs, dropped = load_runs(inputs, labels, methods, extract, truncated)
    try:   # before any replay: a refused axis costs nothing
        for r in runs:
            require(r.costs, x, r.label)
    except CostError as e:
        raise InputError(str(e)) from None
    replays = replay_runs(runs, list(replay), ks, repeats, seed, bootstrap, extract, truncated) if replay else []
    try:
        res = cost_curves(runs, x=x, ks=ks, repeats=repeats, seed=seed, jobs=jobs, bootstrap=bootstrap,
                          replays=replays)
    except CostError as e:
        raise InputError(str(e)) from None
    except ValueError as e:   # two runs with one label
        raise InputError(str(e)) from None
    res["dropped"] = dropped
    if plot:
        plot_cost(res, plot)
        print(f"tts: wrote {plot}", file=sys.stderr)
    if as_json:
        sys.stdout.buffer.write(dumps(res) + b"\n")
    else:
        print(cost_table(res))

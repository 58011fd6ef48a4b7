"""`tts eval`: score aggregated records against their gold answers; accuracy-vs-K curves."""
from __future__ import annotations

import shutil
import sys
from enum import Enum
from typing import List, Optional

import typer

from tts_cli.commands._common import (
    EXTRACT_HELP, JOBS_HELP, STOP_HELP, TRUNCATED_HELP, Truncated, checked_extract, checked_samples, default_jobs,
    methods_or_error, records_with_lines, stop_markers, translate_pool_errors,
)
from tts_cli.commands._common import (  # checks made before any work
    checked_plot_path, counting_ids, curve_size_warnings, duplicate_ids_warning,
)
from strategies.jsonl import InputError


class CostAxis(str, Enum):
    samples = "samples"
    tokens = "tokens"
    flops = "flops"


def parse_ks(text: str | None) -> list[int] | None:
    """`auto` (None: powers of two up to N) or a comma-separated list of positive integers."""
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise InputError(f"--curve {text!r}: expected K1,K2,... (positive integers) or auto") from None
    if not ks or min(ks) < 1:
        raise InputError(f"--curve {text!r}: every K must be >= 1")
    return sorted(set(ks))


def _curve_methods(problems, methods):
    """The methods a curve re-aggregates: those asked for, else those recorded in the records."""
    from strategies.aggregators.api import method_from_entry
    from strategies.evaluation.core import common_labels

    if methods:
        return methods
    try:
        return [(lab, method_from_entry(lab, problems[0].aggregates[lab])) for lab in common_labels(problems)]
    except ValueError as e:
        raise InputError(f"cannot re-aggregate the recorded methods: {e}") from None


def evaluate(
    input: Optional[List[str]] = typer.Argument(None, help="Aggregated JSONL (`tts aggregate` output) with gold `answer`, "
                                                            "or - for stdin. Several files: compared on one cost axis "
                                                            "(see --x). Default: - (stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    curve: Optional[str] = typer.Option(None, "--curve",
                                        help="Accuracy vs K: K1,K2,... or auto (powers of two up to N, and N). "
                                             "Default: no curve (auto when --plot is given)."),
    repeats: int = typer.Option(10, "--repeats", min=1, help="Random subsets per K."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random subsets and of the bootstrap over problems."),
    bootstrap: int = typer.Option(10000, "--bootstrap", min=0,
                                  help="Bootstrap draws over problems for the 95% intervals and the paired comparison "
                                       "with majority voting (0 = none)."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Write the accuracy-vs-K figure here (PNG, PDF, SVG, ...: from the extension; "
                                                             "missing folders are created). Default: no figure."),
    method: Optional[List[str]] = typer.Option(None, "--method", "-a",
                                               help="Aggregate with these methods instead of reading the recorded "
                                                    "`aggregates` (as in `tts aggregate`). Default: the recorded ones."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Method options for -a, as in `tts aggregate`. Default: none."),
    extract: str = typer.Option("auto", "--extract", help=EXTRACT_HELP),
    truncated: Optional[Truncated] = typer.Option(
        None, "--truncated",
        help="Default: as the records were aggregated (each sample's `pred`; marked for samples without one). "
             "Given, it decides every cut-off sample afresh and re-aggregates the recorded methods with their "
             "options, so that every row scores the same answers. " + TRUNCATED_HELP),
    stop_at: Optional[List[str]] = typer.Option(None, "--stop-at", help=STOP_HELP),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help=JOBS_HELP),
    x: Optional[CostAxis] = typer.Option(None, "--x",
                                         help="Cost axis of the runs' curves: samples, tokens (generated, stopped "
                                              "samples included) or flops (2 x non-embedding parameters per token "
                                              "of every model). Default: tokens with several files; one file "
                                              "without it: the table and K curve."),
    label: Optional[List[str]] = typer.Option(None, "--label",
                                              help="A name per input file, in order, for tables and plots. Default: "
                                                   "the file name, its generator mode and its pruner."),
    replay: Optional[List[str]] = typer.Option(None, "--replay",
                                               help="A pruner's curve from each unpruned run with traces: "
                                                    "deepconf:KEY=V,... or deepprune:KEY=V,... (the pruner's "
                                                    "fields, e.g. deepconf:warmup=4,keep=0.9) replayed on every "
                                                    "random K-subset; repeatable. Default: none."),
) -> None:
    """Score aggregated records against gold answers; --curve for accuracy vs K (RPC's protocol)."""
    inputs = input or ["-"]
    input = inputs[0]
    from strategies.aggregators.api import prepare
    from strategies.evaluation import curve as run_curve, default_ks, load_problems, summarize
    from strategies.evaluation.report import curve_table, summary_table
    from strategies.jsonl import dumps

    methods = methods_or_error(method, opt or []) if method else None
    ks = parse_ks(curve)
    if plot:
        checked_plot_path(plot, inputs=inputs)
    if len(inputs) > 1 or x is not None or label or replay:
        from tts_cli.commands._runs import evaluate_runs

        return evaluate_runs(inputs, label, (x or CostAxis.tokens).value, ks, repeats, seed, bootstrap, plot,
                             methods, checked_extract(extract), truncated.value if truncated else None,
                             default_jobs(jobs), as_json, replay or [])
    records, lines = records_with_lines(input)
    records = checked_samples(records, lines, input)
    ids: dict = {}
    records = counting_ids(records, ids)
    with translate_pool_errors(input, lines):
        problems, skipped = load_problems(records, [m for _, m in methods or []], checked_extract(extract),
                                           truncated=truncated.value if truncated else None,
                                           stop=stop_markers(stop_at))
    for reason, count in skipped.items():
        if count:
            print(f"tts: warning: skipped {count} record(s): {reason.replace('_', ' ')}", file=sys.stderr)
    if duplicate_ids_warning(ids):
        print(duplicate_ids_warning(ids), file=sys.stderr)
    if not problems:
        raise InputError("no record has both `samples` and a gold `answer`")
    jobs = default_jobs(jobs)
    if truncated and not methods and problems:
        # The recorded aggregates voted with the answers of their own run: rescore them on the
        # answers --truncated gives, as the single-sample row and the oracle are.
        methods = _curve_methods(problems, None) or None
        if methods:
            with translate_pool_errors(input, lines):
                prepare([p.pool for p in problems], [m for _, m in methods])
            print(f"tts: note: --truncated {truncated.value}: re-aggregating the recorded methods "
                  f"({', '.join(lab for lab, _ in methods)}) on the answers it gives", file=sys.stderr)
    result = summarize(problems, methods, ks=ks, jobs=jobs, bootstrap=bootstrap, seed=seed)
    if not result["methods"] and not methods:
        print("tts: warning: no recorded `aggregates` common to all records; run `tts aggregate` or pass -a",
              file=sys.stderr)
    if curve is not None or plot:
        chosen = _curve_methods(problems, methods)
        ks = ks or default_ks(result["samples"])
        for warning in curve_size_warnings(ks, [p.pool.size for p in problems]):
            print(warning, file=sys.stderr)
        with translate_pool_errors(input, lines):
            result["curve"] = run_curve(problems, chosen, ks, repeats=repeats, seed=seed, jobs=jobs,
                                        bootstrap=bootstrap)
        if plot:
            from strategies.evaluation.plot import plot_curve

            plot_curve(result["curve"], plot)
            print(f"tts: wrote {plot}", file=sys.stderr)
    if as_json:
        sys.stdout.buffer.write(dumps(result) + b"\n")
    else:
        text = summary_table(result)
        if "curve" in result:
            # a terminal gets tables that fit its width; a file or pipe gets one table
            columns = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            text += "\n\n" + curve_table(result["curve"], columns)
        print(text)


evaluate.__doc__ += (
    "\n\nPer method: accuracy (tied winners earn 1/|ties| each), ECE (10 bins over the winner's "
    "confidence), Brier score and mean tokens per problem; for the pool: mean single-sample accuracy, "
    "unbiased pass@k and the oracle (any sample correct); a 95% bootstrap interval over problems, and "
    "the share of bootstrap draws in which each method beats (or ties) majority voting; the share of "
    "samples cut off by the token limit (finish: length), whose answers may be fragments.\n\n"
    "--curve: for each K, --repeats seeded random K-subsets of every problem's samples are "
    "re-aggregated; mean ± std accuracy per method (± is the spread over subset draws), the 95% "
    "interval over problems, and the oracle on the same subsets. --plot draws it (log-2 K axis, "
    "error bands).\n\n"
    "Warnings (stderr): record ids that appear more than once, --curve K larger than a problem's pool.\n\n"
    "Several files (or --x): each (run, method, K) point's accuracy, its 95% interval over the problems all "
    "runs share, and its mean cost per problem on --x; * marks the Pareto frontier. A pruned run is one "
    "point. --plot draws accuracy against cost on a log axis (docs/evaluation.md, \"Compute\")."
)

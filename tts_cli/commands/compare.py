"""`tts compare A B`: two runs, one method, paired on their common problems (the library is
strategies.evaluation.compare)."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

from tts_cli.commands._common import EXTRACT_HELP, TRUNCATED_HELP, Truncated, checked_extract, methods_or_error
from strategies.jsonl import InputError


def compare(
    a: str = typer.Argument(..., help="Run A: aggregated JSONL with gold `answer` (or - for stdin)."),
    b: str = typer.Argument(..., help="Run B: aggregated JSONL with gold `answer`."),
    method: str = typer.Option("majority", "--method", "-a",
                               help="The method compared: its recorded aggregate when every record of a run has "
                                    "it (under this label), else aggregated afresh with it."),
    opt: Optional[List[str]] = typer.Option(None, "--opt", help="Method options for -a, as in `tts aggregate` "
                                                                 "(then aggregated afresh). Default: none."),
    label: Optional[List[str]] = typer.Option(None, "--label",
                                              help="Names for A and B (give both). Default: the file name, its "
                                                   "generator mode and its pruner."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    bootstrap: int = typer.Option(10000, "--bootstrap", min=0,
                                  help="Bootstrap draws over problems for the 95% intervals (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap draws."),
    extract: str = typer.Option("auto", "--extract", help=EXTRACT_HELP),
    truncated: Optional[Truncated] = typer.Option(None, "--truncated",
                                                  help="Default: as the records were aggregated (each sample's `pred`). "
                                                       "Given: as in `tts aggregate`: " + TRUNCATED_HELP),
) -> None:
    """Paired comparison of two runs on their common problems: accuracy of each, B − A with a paired
    bootstrap interval, an exact sign test (McNemar's for 0/1 credits), mean cost per problem of
    each, and the ids of the problems where they disagree (open them with `tts show --id`)."""
    from strategies.evaluation.compare import compare as run_compare, compare_table
    from strategies.jsonl import dumps
    from tts_cli.commands._runs import load_runs

    methods = methods_or_error([method], opt or [])
    runs, dropped = load_runs([a, b], label, methods, checked_extract(extract), truncated.value if truncated else None)
    try:
        # --opt asks for those options: aggregate afresh rather than read what was recorded
        res = run_compare(runs[0], runs[1], method, fresh=methods[0][1] if opt else None, bootstrap=bootstrap,
                          seed=seed)
    except ValueError as e:
        raise InputError(str(e)) from None
    res["dropped"] = dropped
    if as_json:
        sys.stdout.buffer.write(dumps(res) + b"\n")
    else:
        print(compare_table(res, dropped))

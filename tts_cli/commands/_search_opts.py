"""`tts generate --search`: the options of verifier-guided search (docs/search.md), declared here so
generate.py carries only their names, and the checks that refuse what a search cannot run with."""
from __future__ import annotations

import typer

from strategies.jsonl import InputError
from strategies.search.params import SearchParams

PANEL = "Search with a process reward model (--search, docs/search.md)"
_D = SearchParams(n=1)

# the options beside --search; None means "not given" (the method's default applies)
OPTIONS = ("beam_width", "max_steps", "step_sep", "reduce", "prm", "resample", "search_temperature")


def opt(*names, help: str):
    return typer.Option(None, *names, help=help, rich_help_panel=PANEL, show_default=False)


SEARCH = opt("--search", help="Search over steps guided by a process reward model: beam | dvts | particles. "
             "Default: off (independent samples).")
BEAM_WIDTH = opt("--beam-width", help=f"M: beam search keeps N/M beams each expanded into M; DVTS runs N/M "
                 f"subtrees of M. Default: {_D.beam_width}.")
MAX_STEPS = opt("--max-steps", help=f"Most steps; the last one runs to the end. Default: {_D.max_steps}.")
STEP_SEP = opt("--step-sep", help="What ends a step (backslash escapes read). Default: \\n\\n (a blank line).")
REDUCE = opt("--reduce", help=f"How a partial solution's step rewards rank it: last | min | prod | mean. "
             f"Default: {_D.reduce}.")
PRM = opt("--prm", help="The process reward model: a local checkpoint directory (or a hub id in the local "
          "cache) of a step-tag or token-classification PRM, as `tts score` reads (docs/verifiers.md); or "
          "scripted:CHARS, a stand-in for plumbing (reward = share of the step's characters in CHARS). "
          "Default: none (required with --search).")
RESAMPLE = opt("--resample", help=f"Particle filtering's resampling: multinomial | systematic. Default: {_D.resample}.")
SEARCH_TEMPERATURE = opt("--search-temperature", help=f"Particle filtering: weights softmax(logit(reward) / T). "
                         f"Default: {_D.temperature}.")


def controller(search, given: dict, *, n: int, seed: int, mode: str, prune, penalties, prompt_field: str):
    """The search controller for these options (None without --search), or a one-line InputError;
    whether the backend can pause and fork rows is its own to say (runner.check_backend)."""
    named = {k: v for k, v in given.items() if v is not None}
    if search is None:
        if named:
            flag = "--" + next(iter(named)).replace("_", "-")
            raise InputError(f"{flag} applies only with --search beam|dvts|particles")
        return None
    from strategies.search import REGISTRY, method, scorer

    if search not in REGISTRY:
        raise InputError(f"--search {search!r}: expected one of {', '.join(REGISTRY)}")
    if mode != "discrete":
        raise InputError(f"--search runs with --mode discrete, not {mode}")
    if prune is not None:
        raise InputError("--search and --prune both steer the rows; use one")
    if penalties.active:
        raise InputError("--search cannot use --repetition/presence/frequency-penalty")
    if named.get("prm") is None:
        raise InputError("--search needs --prm (a process reward model scorer)")
    sep = named.get("step_sep")
    if sep is not None:
        sep = sep.encode("latin-1", "backslashreplace").decode("unicode_escape")
    params = SearchParams(n=n, seed=seed,
                          **{k: v for k, v in (("beam_width", named.get("beam_width")),
                                               ("max_steps", named.get("max_steps")), ("step_sep", sep),
                                               ("reduce", named.get("reduce")), ("resample", named.get("resample")),
                                               ("temperature", named.get("search_temperature"))) if v is not None})
    try:
        return method(search)(scorer(named["prm"]), params, prompt_field=prompt_field)
    except ValueError as e:
        raise InputError(str(e)) from None

"""Pruning options for `tts generate --prune` and `tts prune`, generated from the pruners' own
declarations (`options` on each class in strategies.pruners.METHODS), so an option is written once,
beside the method that reads it.

`with_pruner_options(command)` appends one `--flag` per declared option to the command's signature
(typer reads the signature) and hands the command the given ones as `pruner_options`, a dict
holding only the options the user gave (a flag's default is None: "not given").
"""
from __future__ import annotations

import functools
import inspect
import sys
from typing import Optional

import typer

from strategies.jsonl import InputError

PANEL = "Pruning (--prune; docs/pruning.md)"
LABEL = {"deepconf": "DeepConf", "deepprune": "DeepPrune"}


def opt(default, *names, help: str, panel: str = PANEL, **kw):
    return typer.Option(default, *names, help=help, rich_help_panel=panel, show_default=True, **kw)


def declared() -> list[tuple[str, str, object]]:
    """(method, key, Option) for every pruner option, in registry order; a key belongs to one method."""
    from strategies.pruners import METHODS

    out, seen = [], {}
    for method, cls in METHODS.items():
        for key, option in cls.options.items():
            if key in seen:
                raise RuntimeError(f"pruner option {key!r} declared by both {seen[key]} and {method}")
            seen[key] = method
            out.append((method, key, option))
    return out


def _parameter(method: str, key: str, option) -> inspect.Parameter:
    from strategies.pruners.settings import flag

    kind = option.parse if option.parse in (int, float, str) else str
    text = f"{LABEL.get(method, method)}: {option.help}"
    if option.default is not None:  # the flag's own default is None ("not given"): show the method's
        text += f" [default: {option.default}]"
    info = typer.Option(None, flag(key), help=text, rich_help_panel=PANEL, show_default=False)
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=Optional[kind])


def with_pruner_options(command):
    """The command with every pruner option appended to its parameters; it receives them as the
    keyword argument `pruner_options` (only those given)."""
    extra = [_parameter(*d) for d in declared()]
    names = [p.name for p in extra]
    sig = inspect.signature(command)
    own = [p for p in sig.parameters.values() if p.name != "pruner_options"]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {k: v for k in names if (v := kwargs.pop(k, None)) is not None}
        return command(*args, pruner_options=given, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)
    return wrapper


def settings(method: str, given: dict, seed: int):
    """The pruner's checked settings, or a one-line InputError (an option of another pruner
    included)."""
    from strategies.pruners.settings import resolve

    try:
        return resolve(method, given, seed)
    except ValueError as e:
        raise InputError(str(e)) from None


def unused(given: dict, what: str) -> None:
    """Pruner options given where no pruner runs: one line naming the first."""
    from strategies.pruners.settings import flag, owner_of

    if given:
        key = next(iter(given))
        raise InputError(f"{flag(key)} applies to --prune {owner_of(key)} only; {what}")


def controller(s, loaded=None):
    from strategies.pruners import build

    try:
        return build(s, loaded)
    except ValueError as e:
        raise InputError(str(e)) from None


def warn_no_pruning(s, samples: int, what: str = "--prune deepconf with -n") -> None:
    """DeepConf prunes only samples after its warm-up: say so when there are none."""
    if s.method == "deepconf" and samples <= s.warmup:
        print(f"tts: warning: {what} {samples} <= --warmup {s.warmup}: every sample is a warm-up sample, "
              "so nothing is pruned", file=sys.stderr)


def summary(command: str, used: int, full: int, controller=None) -> str:
    """The tokens-saved line `tts prune` ends with."""
    return f"tts {command}: {used} of {full} tokens ({100 * (full - used) / full:.1f}% saved){judge_time(controller)}"


def judge_time(controller) -> str:
    """'; judge S s over P prompts' for a DeepPrune run (its judge's wall-clock time, which the
    records leave out so that the same command writes the same bytes), else ''."""
    prompts = getattr(controller, "judged_prompts", 0)
    if not prompts:
        return ""
    return f"; judge {controller.judge_seconds:.3f} s over {prompts} prompts"


class Tally:
    """An online `--prune` run's closing line: tokens generated, samples stopped and never started.
    What the stopped samples would have cost had they run on is not known online (they never
    ran), so the line cannot give a percentage saved; `tts prune` on an unpruned `--trace` run
    gives it."""

    def __init__(self):
        self.used = self.stopped = self.samples = self.skipped = 0

    def add(self, record: dict) -> None:
        from strategies.sample_fields import STOPPED

        samples = record.get("samples") or []
        self.samples += len(samples)
        self.stopped += sum(s.get("finish") in STOPPED for s in samples)
        search = record.get("search")
        if isinstance(search, dict):   # a search also generated the beams it dropped
            self.used += int(search.get("tokens_generated") or 0)
        else:
            self.used += sum(int(s.get("n_tokens") or 0) for s in samples)
        self.skipped += int(record.get("skipped") or 0)

    def line(self, controller=None) -> str:
        return (f"tts generate: {self.used} tokens generated; {self.stopped} of {self.samples + self.skipped} "
                f"samples stopped, {self.skipped} never started{judge_time(controller)}")

"""The `tts` command: a thin typer layer over the library in strategies/ and verifiers/.

Each subcommand lives in tts_cli/commands/<name>.py and imports torch and friends inside its
function, so `tts --help` and the light commands start fast.

Conventions enforced here, once for every command (docs/format.md, "Command-line conventions"):
- every error is one line on stderr, `tts: error: ...`, exit status 2, never a traceback or a
  usage box; a bad number names the option and its allowed range;
- Ctrl-C prints how many records were written and, for `tts generate`, that --resume continues
  (exit status 130);
- a reader that leaves (`| head`) ends the command quietly with status 0;
- `--help` shows every option's default.
"""
from __future__ import annotations

import inspect
import os
import re
import sys
import typing

import typer
from typer.core import TyperGroup

from strategies import __version__
from strategies.jsonl import InputError, JsonlWriter, release_outputs

# No command contacts a model hub: models are aliases, local directories, .gguf files or hub ids
# already in the local cache. Set before transformers, huggingface_hub or vLLM is imported (they
# read it then), so a name that is none of these fails at once instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:  # typer >= 0.2x carries its own copy of click; older versions use click itself
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as _cx
# typer's own click copy has no Abort (Ctrl-C arrives as KeyboardInterrupt); an attribute lookup
# inside the except clause would turn any other error into an AttributeError
_ABORT = getattr(_cx, "Abort", EOFError)


class Interrupted(Exception):
    """Ctrl-C inside a command, carried past typer (which would turn it into a silent exit 130)."""


def _option_names(param) -> str:
    return "/".join(sorted(getattr(param, "opts", []), key=len)) or getattr(param, "name", "?")


def _given_value(param, args: list[str]) -> str | None:
    """The text the user gave for `param` (for the error line), found in the command line: the
    last occurrence, as a repeated option's last value is the one click checks and keeps."""
    for j in range(len(args) - 1, -1, -1):
        arg = args[j]
        for opt in getattr(param, "opts", []):
            if arg == opt and j + 1 < len(args):
                return args[j + 1]
            if opt.startswith("--") and arg.startswith(opt + "="):
                return arg[len(opt) + 1:]
            if not opt.startswith("--") and arg.startswith(opt) and len(arg) > len(opt):
                return arg[len(opt):]
    return None


def _allowed_range(param) -> str | None:
    """'>= 1', 'between 0.0 and 1.0', ... from typer's min/max (or an older click range type)."""
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is None and hi is None:
        kind = getattr(param, "type", None)
        lo, hi = getattr(kind, "min", None), getattr(kind, "max", None)
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return None


def _command_name(ctx) -> str:
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["tts", *reversed(names)])


# One meaning per short flag across the tool (-m model, -t template, as the `llm` CLI); the
# letters these options had before say where they went.
MOVED_SHORT_FLAGS = {
    "-m": "-m is --model in every tts command, aggregation methods are -a/--method",
    "-t": "-t is --template in every tts command, the sampling temperature is --temperature",
}


def usage_error_line(e, args: list[str]) -> str:
    """One line for a usage error (bad value, unknown option, missing argument).

    typer draws these as a usage line plus a boxed message that wraps over several lines; a
    bad number's message (which depends on the typer version) may not say the allowed range."""
    message = " ".join(e.format_message().split())
    param = getattr(e, "param", None)
    rng = _allowed_range(param) if isinstance(e, _cx.BadParameter) and param is not None else None
    if rng:
        value = _given_value(param, args)
        message = f"{_option_names(param)}{'' if value is None else ' ' + value}: must be {rng}"
    moved = MOVED_SHORT_FLAGS.get(getattr(e, "option_name", None)) if isinstance(e, _cx.NoSuchOption) else None
    if moved:
        message = f"no such option: {e.option_name}; {moved}"
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{_command_name(ctx)} --help`)" if ctx is not None else ""
    return f"tts: error: {message}{hint}"


def _interrupt_line(command) -> str:
    """What Ctrl-C leaves behind: records written so far, and how to continue."""
    files = [w for w in JsonlWriter.opened if w.path not in (None, "-")]
    writers = files or JsonlWriter.opened
    if not writers:
        return "tts: interrupted"
    w = writers[-1]
    where = "stdout" if w.path in (None, "-") else w.path
    line = f"tts: interrupted: {w.written} record{'s' if w.written != 1 else ''} written to {where}"
    resumable = command is not None and any(p.name == "resume" for p in command.params)
    if resumable:
        line += ("; the same command with --resume continues" if files
                 else "; with -o FILE, --resume can continue a later run")
    return line


class _Tts(TyperGroup):
    """typer's group, with the error, interrupt and closed-pipe conventions of `tts`."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            name = ctx.invoked_subcommand
            raise Interrupted(_interrupt_line(self.commands.get(name) if name else None)) from None
        except BrokenPipeError:
            # `tts ... | head`: the reader left; stop quietly (status 0), as Unix tools do, and
            # keep Python's final flush of stdout from raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        JsonlWriter.opened.clear()  # one count per command (tests run many in one process)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except InputError as e:
            print(f"tts: error: {e}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as e:
            print(e, file=sys.stderr)
            sys.exit(130)
        except _cx.NoArgsIsHelpError as e:  # help is already printed
            sys.exit(e.exit_code)
        except _cx.UsageError as e:
            print(usage_error_line(e, args), file=sys.stderr)
            sys.exit(e.exit_code)
        except _cx.ClickException as e:
            print(f"tts: error: {' '.join(e.format_message().split())}", file=sys.stderr)
            sys.exit(e.exit_code)
        except (_ABORT, EOFError):
            print("tts: aborted", file=sys.stderr)
            sys.exit(1)
        finally:
            release_outputs()  # locks on -o files end with the command (tests run many in one process)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="tts",
    cls=_Tts,
    help="Test-time-scaling experiments from the shell: generate N traces per prompt, prune, "
    "aggregate, evaluate. Every command reads JSONL (a file or - for stdin) and writes JSONL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tts {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


# What rich's help renderer reads as a style tag (rich.markup's own pattern): "[default: 1.0]"
# in an option's help would vanish from `--help`. Escaped, it prints as written.
_RICH_TAG = re.compile(r"(?<!\\)(\[[a-z#/@][^[]*?])")
_RICH_HELP = getattr(typer.core, "HAS_RICH", False) and getattr(typer.core, "DEFAULT_MARKUP_MODE", None) == "rich"


def _literal(text: str | None) -> str | None:
    return _RICH_TAG.sub(r"\\\1", text) if text and _RICH_HELP else text


def _help_conventions(func) -> None:
    """Make every option's default visible in `--help`, for every command, as registered.

    typer prints `[default: X]` itself except where the default is None (an optional value:
    the help must say what happens without it, else "none" is added) or a plain flag (off
    unless given: "off" is added), and rich markup in help texts is escaped."""
    func.__doc__ = _literal(func.__doc__)
    hints = typing.get_type_hints(func)
    for name, p in inspect.signature(func).parameters.items():
        info = p.default
        if not isinstance(info, typer.models.ParameterInfo):
            continue
        text = info.help or ""
        flag = hints.get(name) is bool and not any("/" in d for d in info.param_decls)
        if info.default is None and "default" not in text.lower():
            text += " [default: none]"
        elif flag and info.default is False and "default" not in text.lower():
            text += " [default: off]"
        info.help = _literal(text.strip()) or None


def _register() -> None:
    from tts_cli.commands import COMMANDS

    for name, module_name, func_name in COMMANDS:
        try:
            module = __import__(f"tts_cli.commands.{module_name}", fromlist=[func_name])
        except ModuleNotFoundError as e:  # a command still being written must not break the others
            if e.name == f"tts_cli.commands.{module_name}":
                continue
            raise
        target = getattr(module, func_name)
        if isinstance(target, typer.Typer):  # a command group (`tts plot signals|trace`)
            for command in target.registered_commands:
                _help_conventions(command.callback)
            app.add_typer(target, name=name)
        else:
            _help_conventions(target)
            app.command(name)(target)


_register()


def _register_groups() -> None:
    # command groups (`tts softcot train`) are typer sub-apps
    from tts_cli.commands.softcot import softcot_app

    app.add_typer(softcot_app, name="softcot")


_register_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

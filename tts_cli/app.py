"""The `tts` command: a thin typer layer over the library in strategies/ and verifiers/.

Each subcommand lives in tts_cli/commands/<name>.py and imports torch and friends inside its
function, so `tts --help` and the light commands start fast.
"""
from __future__ import annotations

import os
import sys

import typer

from tts_cli import __version__
from tts_cli.io import InputError

app = typer.Typer(
    name="tts",
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


def _register() -> None:
    from tts_cli.commands import COMMANDS

    for name, module_name, func_name in COMMANDS:
        try:
            module = __import__(f"tts_cli.commands.{module_name}", fromlist=[func_name])
        except ModuleNotFoundError as e:  # a command still being written must not break the others
            if e.name == f"tts_cli.commands.{module_name}":
                continue
            raise
        app.command(name)(getattr(module, func_name))


_register()


def _register_groups() -> None:
    # command groups (`tts softcot train`) are typer sub-apps
    from tts_cli.commands.softcot import softcot_app

    app.add_typer(softcot_app, name="softcot")


_register_groups()


def main() -> None:
    try:
        app()
    except InputError as e:
        print(f"tts: error: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:
        # `tts ... | head`: the reader left; stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        print("tts: interrupted; finished records are on disk (use --resume to continue)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

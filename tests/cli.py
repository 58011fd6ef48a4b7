"""Run `tts` in-process (as tts_cli.app.main would) so CLI tests don't pay a fresh interpreter each."""
from dataclasses import dataclass

import orjson
from typer.testing import CliRunner

from tts_cli.app import app
from tts_cli.io import InputError


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def records(self):
        return [orjson.loads(line) for line in self.stdout.splitlines() if line.strip()]


def tts(*args, input: str | None = None) -> Result:
    res = CliRunner().invoke(app, [str(a) for a in args], input=input)
    if isinstance(res.exception, InputError):
        return Result(2, res.stdout, f"tts: error: {res.exception}")
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)

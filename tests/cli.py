"""Run `tts` in-process (as tts_cli.app.main would) so CLI tests don't pay a fresh interpreter each.

The app's own error handling runs (one-line errors, exit codes), as from the shell."""
from dataclasses import dataclass

import orjson
from typer.testing import CliRunner

from tts_cli.app import app


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def records(self):
        # JSONL lines end at "\n" only: str.splitlines() would also split inside a record's text
        # at the Unicode line separators (\x85, \u2028, ...) a sampled token may hold
        return [orjson.loads(line) for line in self.stdout.split("\n") if line.strip()]


def tts(*args, input: str | None = None) -> Result:
    res = CliRunner().invoke(app, [str(a) for a in args], input=input)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)

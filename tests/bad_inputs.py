"""The bad-input table of docs/format.md ("Command-line conventions"), produced by running each case.

    PYTHONPATH=. python -m tests.bad_inputs           # prints the table (markdown)
    PYTHONPATH=. python -m tests.bad_inputs --write   # puts it into docs/format.md

Each case is a mistake a user makes, run through the real command line (in-process, as the tests
do) in a scratch folder of small fixture files; the table lists the command line, what is wrong,
the exit status and the first stderr line. tests/test_conventions.py checks that the table in
the doc is what this prints, so the doc cannot fall behind the code. Only a process id and the
holder's command line (for the lock case) are replaced by placeholders.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile

import orjson

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "format.md")
BEGIN, END = "<!-- bad-input table: python -m tests.bad_inputs -->", "<!-- end of the bad-input table -->"


def _jsonl(*objs) -> str:
    return "".join(orjson.dumps(o).decode() + "\n" for o in objs)


_RUN = {"id": 1, "answer": "4", "samples": [{"i": 0, "text": "2 + 2 = 4", "finish": "stop"}]}
FILES = {
    "in.jsonl": _jsonl({"id": 1, "prompt": "2 + 2?"}, {"id": 2, "prompt": "3 + 3?"}),
    "run.jsonl": _jsonl(_RUN),
    "text-object.jsonl": _jsonl({**_RUN, "samples": [{"i": 0, "text": {"value": 4}, "finish": "stop"}]}),
    "samples-object.jsonl": _jsonl({**_RUN, "samples": {"i": 0, "text": "4"}}),
    "dup-ids.jsonl": _jsonl({"id": 1, "prompt": "a"}, {"id": 2, "prompt": "b"}, {"id": 1, "prompt": "c"}),
    "null-id.jsonl": _jsonl({"id": 1, "prompt": "a"}, {"id": None, "prompt": "b"}),
    "bad-line-2.jsonl": _jsonl({"id": 1, "samples": []}) + "not json\n" + _jsonl({"id": 2, "samples": []}),
    "report.html": "<!doctype html>\n<title>report</title>\n",
    "gsm8k-no-hashes.jsonl": _jsonl({"question": "Q?", "answer": "3 + 15 = 18"}),
    "mawps-no-target.jsonl": _jsonl({"input": "Q?"}),
    "mawps-list-target.jsonl": _jsonl({"input": "Q?", "target": [18, 19]}),
    "math-no-boxed.jsonl": _jsonl({"problem": "P?", "solution": "so it is 4."}),
    "locked.jsonl": "",
}
TINY = ["-m", "tiny-random", "--max-new-tokens", "2", "-q"]

# (what is wrong, argv, the file given on stdin)
CASES = [
    ("-o is the input file", ["generate", "in.jsonl", "-o", "in.jsonl", *TINY], None),
    ("-o is the input file (a hard link)", ["generate", "in.jsonl", "-o", "link.jsonl", *TINY], None),
    ("-o is the input file", ["aggregate", "run.jsonl", "-a", "majority", "-o", "run.jsonl"], None),
    ("-o is the input file", ["data", "gsm8k", "in.jsonl", "-o", "in.jsonl"], None),
    ("-o is the input file", ["prune", "run.jsonl", "--method", "deepconf", "-o", "run.jsonl"], None),
    ("--html is the input file", ["show", "run.jsonl", "--html", "run.jsonl"], None),
    ("-o is a directory", ["generate", "in.jsonl", "-o", "outdir", *TINY], None),
    ("-o is a directory", ["generate", "in.jsonl", "-o", "outdir", "--resume", *TINY], None),
    ("-o is a directory", ["aggregate", "run.jsonl", "-a", "majority", "-o", "outdir"], None),
    ("-o is a directory", ["data", "gsm8k", "in.jsonl", "-o", "outdir"], None),
    ("-o is a directory", ["prune", "run.jsonl", "--method", "deepconf", "-o", "outdir"], None),
    ("--html is a directory", ["show", "run.jsonl", "--html", "outdir"], None),
    ("-o is a directory", ["softcot", "train", "in.jsonl", "-o", "outdir"], None),
    ("-o under a file", ["generate", "in.jsonl", "-o", "in.jsonl/out.jsonl", *TINY], None),
    ("another process writes -o", ["generate", "in.jsonl", "-o", "locked.jsonl", *TINY], None),
    ("--resume: line 2 of 3 of -o is not JSON", ["generate", "in.jsonl", "-o", "bad-line-2.jsonl", "--resume", *TINY], None),
    ("--resume onto an HTML file", ["generate", "in.jsonl", "-o", "report.html", "--resume", *TINY], None),
    ("input file missing", ["generate", "nope.jsonl"], None),
    ("duplicate id", ["generate", "dup-ids.jsonl", *TINY], None),
    ("duplicate id (stdin)", ["generate", *TINY], "dup-ids.jsonl"),
    ("null id", ["generate", "null-id.jsonl", *TINY], None),
    ("a sample's text is an object", ["aggregate", "text-object.jsonl", "-a", "majority"], None),
    ("a sample's text is an object", ["eval", "text-object.jsonl"], None),
    ("a sample's text is an object", ["plot", "signals", "text-object.jsonl", "--json"], None),
    ("a sample's text is an object", ["show", "text-object.jsonl", "--html", "r.html"], None),
    ("samples is not a list", ["show", "samples-object.jsonl"], None),
    ("unknown image format", ["plot", "signals", "run.jsonl", "-o", "fig.foo"], None),
    ("unknown image format", ["plot", "trace", "run.jsonl", "-o", "fig.foo"], None),
    ("vLLM with a tiny random model", ["generate", "in.jsonl", "--backend", "vllm", "-m", "tiny-random"], None),
    ("vLLM with a tiny random model", ["bench", "--against", "vllm", "-m", "tiny-random"], None),
    ("repeated option: the last value counts", ["generate", "in.jsonl", "-n", "2", "-n", "-3"], None),
    ("penalty 0", ["generate", "in.jsonl", "--repetition-penalty", "0", *TINY], None),
    ("--max-new-tokens beyond the context", ["generate", "in.jsonl", "-m", "tiny-random", "--max-new-tokens", "100000"], None),
    ("soft-mode option in discrete mode", ["generate", "in.jsonl", "--noise", "gumbel", *TINY], None),
    ("soft-mode option in discrete mode", ["generate", "in.jsonl", "--soft-budget", "64", *TINY], None),
    ("softcot option in discrete mode", ["generate", "in.jsonl", "--projection", "p.safetensors", *TINY], None),
    ("--wrong-only, but no record is wrong", ["show", "run.jsonl", "--wrong-only"], None),
    ("terminal option with --html", ["show", "run.jsonl", "--html", "r.html", "--sample", "0"], None),
    ("GSM8K answer without ####", ["data", "gsm8k", "gsm8k-no-hashes.jsonl"], None),
    ("no gold answer", ["data", "mawps", "mawps-no-target.jsonl"], None),
    ("gold answer is a list", ["data", "mawps", "mawps-list-target.jsonl"], None),
    ("MATH solution without \\boxed{}", ["data", "math", "math-no-boxed.jsonl"], None),
]

_HOLD = ("import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(120)\n")


@contextlib.contextmanager
def scratch():
    """A scratch folder with the fixture files as the working directory, and a process holding a
    lock on locked.jsonl (as a running `tts generate -o locked.jsonl` would)."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        for name, text in FILES.items():
            with open(os.path.join(d, name), "w") as fh:
                fh.write(text)
        os.link(os.path.join(d, "in.jsonl"), os.path.join(d, "link.jsonl"))
        os.mkdir(os.path.join(d, "outdir"))
        holder = subprocess.Popen([sys.executable, "-c", _HOLD, "locked.jsonl"], cwd=d, stdout=subprocess.PIPE, text=True)
        try:
            holder.stdout.readline()
            os.chdir(d)
            yield d
        finally:
            os.chdir(here)
            holder.kill()
            holder.wait()


def run_cases():
    """(argv, what is wrong, exit code, first stderr line) per case."""
    from tests.cli import tts

    out = []
    with scratch():
        for what, argv, stdin in CASES:
            r = tts(*argv, input=None if stdin is None else FILES[stdin])
            first = (r.stderr.strip().splitlines() or [""])[0]
            first = re.sub(r"process \d+ \(.*\) is writing", "process PID (COMMAND LINE) is writing", first)
            out.append((argv, stdin, what, r.code, first, r))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(results=None) -> str:
    rows = ["| command | what is wrong | exit | stderr |", "|---|---|---|---|"]
    for argv, stdin, what, code, first, _ in results or run_cases():
        shown = " ".join(argv).replace(" " + " ".join(TINY[2:]), "")  # speed settings, not the point
        shown += "" if stdin is None else f" < {stdin}"
        rows.append(f"| `tts {_cell(shown)}` | {_cell(what)} | {code} | {_cell(first)} |")
    return "\n".join(rows) + "\n"


def doc_table() -> str:
    text = open(DOC, encoding="utf-8").read()
    return text.split(BEGIN + "\n", 1)[1].split(END, 1)[0]


def write_doc() -> None:
    """Replace the table in docs/format.md with a freshly run one."""
    text = open(DOC, encoding="utf-8").read()
    head, rest = text.split(BEGIN + "\n", 1)
    with open(DOC, "w", encoding="utf-8") as fh:
        fh.write(head + BEGIN + "\n" + table() + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_doc()
    else:
        sys.stdout.write(table())

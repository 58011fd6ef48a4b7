"""Conventions every `tts` command keeps, through the real command line: one-line errors (with the
option and its allowed range), Ctrl-C and closed-pipe behaviour, one meaning per short flag, and
every default visible in --help. Expected values come from the command declarations themselves
(typer's click objects) or from torch, never from the code that formats the messages."""
import os
import re
import signal
import subprocess
import sys
import time
from enum import Enum

import orjson
import pytest
import typer.main

from tests.cli import tts
from tts_cli.app import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = typer.main.get_command(app).commands
# What each command needs besides the option under test, so that only that option is wrong.
REQUIRED = {"aggregate": ["--method", "majority"], "data": ["gsm8k", "nofile.jsonl"]}


def lines(*objs):
    return "".join(orjson.dumps(o).decode() + "\n" for o in objs)


def one_error_line(r) -> str:
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    text = r.stderr.strip()
    assert len(text.splitlines()) == 1 and text.startswith("tts: error: "), text
    assert "Traceback" not in text and "╭" not in text and "Usage:" not in text
    return text


def options(kind=None):
    for name, cmd in COMMANDS.items():
        for p in cmd.params:
            if kind is None or type(p).__name__ == kind:
                yield name, p


# --- one-line errors ---------------------------------------------------------------------------

RANGED = [(name, p) for name, p in options("TyperOption") if p.min is not None or p.max is not None]


@pytest.mark.parametrize("name,param", RANGED, ids=[f"{n}{p.opts[0]}" for n, p in RANGED])
def test_out_of_range_number_is_one_line_naming_option_and_range(name, param):
    bad = param.max + 1 if param.max is not None else param.min - 1
    text = one_error_line(tts(name, *REQUIRED.get(name, []), param.opts[0], bad))
    long = max(param.opts, key=len)
    assert long in text and str(bad) in text
    for bound in (param.min, param.max):
        if bound is not None:
            assert str(bound) in text
    assert f"tts {name} --help" in text


def test_issue_examples_n0_and_top_p_2():
    assert one_error_line(tts("generate", "-n", "0")) == \
        "tts: error: -n/--samples 0: must be >= 1 (see `tts generate --help`)"
    assert "--top-p 2: must be between 0.0 and 1.0" in one_error_line(tts("generate", "--top-p", "2"))


@pytest.mark.parametrize("argv", [
    ["generate", "--no-such-option"], ["data"], ["data", "gsm9k", "x.jsonl"], ["gen"],
    ["generate", "--mode", "hard"], ["eval", "--repeats", "many"],
])
def test_usage_errors_are_one_line(argv):
    one_error_line(tts(*argv))


def test_old_short_flags_say_where_they_went():
    text = one_error_line(tts("aggregate", "-m", "majority", input=""))
    assert "-a/--method" in text
    text = one_error_line(tts("generate", "-t", "0.7", input=""))
    assert "--temperature" in text


def test_bad_device_lists_what_this_machine_has():
    import torch

    text = one_error_line(tts("generate", "--model", "tiny-random", "--device", "cdua", input=lines({"prompt": "x"})))
    listed = text.split("available: ")[1].split(", ")
    expected = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
                                  if torch.cuda.is_available() else [])
    assert listed[:len(expected)] == expected and "--device cdua" in text
    if not torch.cuda.is_available():
        assert "cuda" in one_error_line(tts("bench", "--model", "tiny-random", "--device", "cuda"))


def test_bad_dtype_is_one_line_before_loading(monkeypatch):
    import strategies.models as models

    def no_loading(*a, **k):
        raise AssertionError("the model must not be looked up before the options are checked")

    monkeypatch.setattr(models, "resolve", no_loading)
    text = one_error_line(tts("generate", "--dtype", "fp8", input=lines({"prompt": "x"})))
    assert "--dtype fp8" in text and "bf16" in text


@pytest.mark.parametrize("alias,torch_name", [("fp16", "float16"), ("half", "float16"), ("bf16", "bfloat16"),
                                              ("fp32", "float32"), ("float32", "float32")])
def test_dtype_aliases(alias, torch_name):
    r = tts("generate", "--model", "tiny-random", "--max-new-tokens", "2", "--quiet", "--dtype", alias,
            input=lines({"prompt": "x"}))
    assert r.code == 0, r.stderr
    assert r.records()[0]["run"]["dtype"] == torch_name


def _run(argv, **kw):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "tts_cli.app", *argv], cwd=ROOT, env=env,
                            # a background job may start with SIGINT ignored; Ctrl-C must reach it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def test_ctrl_c_says_how_many_records_are_written_and_how_to_resume(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"prompt number {i}"} for i in range(300))))
    out = tmp_path / "out.jsonl"
    proc = _run(["generate", str(inp), "-o", str(out), "--batch-size", "4", "--model", "tiny-random",
                 "--max-new-tokens", "40", "--quiet"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    written = out.read_bytes().count(b"\n")
    assert proc.returncode == 130
    assert err.strip().splitlines() == [
        f"tts: interrupted: {written} records written to {out}; the same command with --resume continues"]
    assert 3 <= written < 300


def test_closed_pipe_exits_0_quietly(tmp_path):
    src = tmp_path / "items.jsonl"
    src.write_text(lines(*({"question": "q" * 100, "answer": str(i)} for i in range(5000))))
    script = f"{sys.executable} -m tts_cli.app data jsonl {src} | head -n 1"
    p = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0 and p.stderr == "" and p.stdout.count("\n") == 1


# --- short flags and --help --------------------------------------------------------------------

def test_one_meaning_per_short_flag():
    meaning: dict[str, set] = {}
    for _, p in options("TyperOption"):
        longs = [o for o in p.opts if o.startswith("--")]
        for short in (o for o in p.opts if not o.startswith("--")):
            meaning.setdefault(short, set()).update(longs)
    assert {k: v for k, v in meaning.items() if len(v) != 1} == {}
    assert meaning["-m"] == {"--model"} and meaning["-t"] == {"--template"} and meaning["-a"] == {"--method"}


def _help_rows(text: str) -> dict[str, str]:
    """Option -> its whole row of the rendered --help (box drawing removed, lines joined)."""
    rows, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^│ {1,4}(?:\*\s+)?(--[\w-]+)", line)  # wrapped help text is indented further
        if m:
            current = m.group(1)
            rows[current] = ""
        elif line.startswith("╰"):
            current = None
        if current:
            rows[current] += " " + line.strip("│ ")
    return {k: " ".join(v.replace("│", " ").split()) for k, v in rows.items()}


def expected_default(p) -> str | None:
    if p.is_flag and p.secondary_opts:
        return (p.opts if p.default else p.secondary_opts)[0].lstrip("-")
    if p.is_flag:
        return "off" if not p.default else None
    if isinstance(p.default, Enum):
        return str(p.default.value)
    return None if p.default is None else str(p.default)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_every_default(name):
    rows = _help_rows(tts(name, "--help").stdout)
    for p in COMMANDS[name].params:
        if type(p).__name__ != "TyperOption" or p.required:
            continue
        row = rows[max(p.opts, key=len)]
        want = expected_default(p)
        if want is None:  # an optional value: the help must say what happens without it
            assert "default" in row.lower(), row
        else:
            assert f"[default: {want}]" in row, row


def test_bracketed_defaults_in_help_texts_survive_the_renderer():
    rows = _help_rows(tts("generate", "--help").stdout)
    for opt in ("--temperature", "--top-p", "--top-k", "--min-p"):
        declared = next(p for p in COMMANDS["generate"].params if opt in p.opts).help
        bracket = re.search(r"\[default: [^\]]*\]", declared.replace("\\[", "[")).group(0)
        assert bracket in rows[opt]


# --- the bad-input table of docs/format.md ---------------------------------------------------------

def test_bad_input_table_in_the_docs_is_what_the_commands_print():
    from tests.bad_inputs import CASES, doc_table, run_cases, table

    results = run_cases()
    for argv, _, what, code, first, r in results:  # every case is a refusal in the house style
        assert code == 2 and len(r.stderr.strip().splitlines()) == 1 and first.startswith("tts: error: "), (argv, r.stderr)
    assert len(results) == len(CASES)
    assert doc_table() == table(results), "docs/format.md is stale: regenerate it with `python -m tests.bad_inputs`"


def test_progress_counts_samples_while_records_decode_together(tmp_path, monkeypatch):
    """4 records x 3 samples decode in one batch: the log shows samples finishing, up to 12/12."""
    monkeypatch.setenv("TTS_PROGRESS_SECONDS", "0")
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"p{i}"} for i in range(4))))
    r = tts("generate", inp, "-n", "3", "--batch-size", "12", "-m", "tiny-random", "--max-new-tokens", "6")
    assert r.code == 0, r.stderr
    counts = [int(c) for c in re.findall(r"(\d+)/12 samples", r.stderr)]
    assert counts and counts[-1] == 12 and counts == sorted(counts)
    assert sum(len(rec["samples"]) for rec in r.records()) == 12

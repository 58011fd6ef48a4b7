"""The README and docs/ stand alone: a user who clones the repository has every file they name,
and `make demo` runs from the problems that ship with it."""
import json
import re
from pathlib import Path

import pytest

from tests.cli import tts

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_name_no_file_outside_the_repository(doc):
    text = doc.read_text()
    assert "../shared" not in text and "shared/data" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):  # markdown links
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


def test_demo_runs_from_the_problems_that_ship():
    script = (ROOT / "benchmarks" / "demo.sh").read_text()
    default = re.search(r"data=\$\{DEMO_DATA:-([^}]+)\}", script).group(1)
    assert "shared" not in script
    src = ROOT / default
    expected = [line for line in src.read_text().splitlines() if line.strip()]
    r = tts("data", "mawps", src, "--limit", "20")
    assert r.code == 0, r.stderr
    records = r.records()
    assert len(records) == min(20, len(expected)) >= 8
    assert all(rec["prompt"] and rec["answer"] is not None for rec in records)


# --- every `tts ...` command line in the docs parses against the live CLI ----------------------
#
# Command lines come from fenced code blocks (continuation lines joined, pipelines, `&&` and `;`
# split, redirections and comments dropped) and from inline code spans that start with `tts `.
# Each is parsed by the CLI's own click parser (typer's `get_command`), so the test follows the
# options and commands as they are now, whoever adds them; nothing runs. Synopsis notation is
# read as such: `[...]` is optional (its options must exist), `a|b` inside a word is each
# alternative in turn, `<...>` is a value (a `<command>` stands for every command). A line that
# elides part of itself with `...` or `…` is skipped: it is not a command line.
import itertools
import shlex

try:  # typer vendors click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_errors


def _doc_command_lines():
    """(where, text, inline) of every command line in README.md and docs/*.md that calls `tts`;
    the bad-input table of docs/format.md lists mistakes on purpose, and its own test
    (test_conventions) checks it against the commands, so it is left out here."""
    from tests.bad_inputs import BEGIN, END

    out = []
    for doc in DOCS:
        in_block, held, in_table = False, "", False
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            if line.strip() in (BEGIN, END):
                in_table = line.strip() == BEGIN
                continue
            if in_table:
                continue
            if line.strip().startswith("```"):
                in_block, held = not in_block, ""
                continue
            if in_block:
                if line.rstrip().endswith("\\"):
                    held += line.rstrip()[:-1] + " "
                    continue
                text, held = held + line, ""
                if re.search(r"(^|[|;&]\s*)tts\s", text.strip()):
                    out.append((f"{doc.name}:{n}", text.strip(), False))
            else:
                out.extend((f"{doc.name}:{n}", m.group(1), True) for m in re.finditer(r"`(tts [^`]+)`", line))
    return out


# Shell redirections (`> out.jsonl`, `2> log`, `< in`), dropped before the line is split into words.
_REDIRECT = re.compile(r"(?<!\S)\d*(?:>>?|<)&?\s*[^\s|;&]+")
# A placeholder value in synopsis notation: FILE, N, MODE, or a <placeholder>.
_PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|VALUE")


def _tts_invocations(text):
    """The argument lists of the `tts` calls in a shell line."""
    text = re.sub(r"\[([^\]]*)\]", r"\1", text)                 # [optional] parts
    text = re.sub(r"<[^<>|]+>", "VALUE", text)                  # <placeholders>
    text = _REDIRECT.sub(" ", text)
    lex = shlex.shlex(text, posix=True, punctuation_chars="|&;()")
    lex.whitespace_split = True
    calls, segment = [], []
    for tok in list(lex) + ["|"]:
        if set(tok) <= set("|&;()"):
            if segment and segment[0] == "tts":
                calls.append(segment[1:])
            segment = []
        else:
            segment.append(tok)
    return calls


def _variants(args):
    """`a|b` inside a word: each alternative in turn (the other words keep their first)."""
    spots = [j for j, a in enumerate(args) if "|" in a]
    if not spots:
        return [args]
    out = []
    for j in spots:
        for alt in args[j].split("|"):
            out.append([alt if k == j else (a.split("|")[0] if k in spots else a) for k, a in enumerate(args)])
    return out


def _check(root, args, inline=False):
    """None if `tts ARGS` parses, else the parser's message. `inline`: a prose mention, which may
    name an option without its value (`tts eval --curve`)."""
    if not args or args[0].startswith("-"):
        return None  # `tts --help`, `tts --version`
    if args[0] == "VALUE":  # `tts <command> --help`
        return next(filter(None, (_check(root, [name, *args[1:]], inline) for name in root.commands)), None)
    cmd, path = root, []
    while hasattr(cmd, "commands") and args and not args[0].startswith("-"):
        if args[0] not in cmd.commands:
            return f"no command {' '.join(path + [args[0]])!r}"
        path.append(args[0])
        cmd, args = cmd.commands[args[0]], args[1:]
    if hasattr(cmd, "commands"):
        return None  # a group named alone (`tts plot`): its commands are checked where written
    args = [a for a in args if a not in ("--help", "-h")]
    if inline and args and args[-1].startswith("-"):
        param = next((p for p in cmd.params if args[-1] in getattr(p, "opts", [])), None)
        if param is None:
            return f"{' '.join(path)}: no option {args[-1]}"
        if not param.is_flag:
            args.append("VALUE")  # prose names the option; its value is not the point
    filled: set = set()
    while True:
        try:
            cmd.make_context(" ".join(path), list(args))
            return None
        except click_errors.MissingParameter:
            return None  # prose names a command with some options; it need not give every required one
        except click_errors.ClickException as e:
            message = e.format_message()
        # A placeholder the option's type refuses (`--limit N`, `--truncated MODE`): try a
        # number, then leave the option out; its name was checked by the parse that got here.
        refused = [j for j, a in enumerate(args) if j and f"'{a}'" in message
                   and (_PLACEHOLDER.fullmatch(a) or j in filled)]
        spot = refused[0] if refused else None
        if spot is None:
            return f"{' '.join(path)}: {message}"
        if spot in filled:
            del args[spot - 1:spot + 1]
            filled = {j if j < spot else j - 2 for j in filled if j != spot}
        else:
            args[spot] = "1"
            filled.add(spot)


COMMAND_LINES = _doc_command_lines()
ELIDED = re.compile(r"\.\.\.|…")
# Spellings the docs quote as mistakes (docs/format.md: "An old habit ... gets a one-line
# error"): they must stay mistakes.
COUNTEREXAMPLES = {"tts generate -t 0.7", "tts aggregate -m majority"}


def _root():
    import typer.main

    from tts_cli.app import app

    return typer.main.get_command(app)


def test_the_docs_have_command_lines_to_check():
    assert len(COMMAND_LINES) > 100
    assert sum(not ELIDED.search(t) for _, t, _ in COMMAND_LINES) > 100


@pytest.mark.parametrize("where, text, inline", COMMAND_LINES, ids=[w for w, _, _ in COMMAND_LINES])
def test_every_documented_command_line_parses(where, text, inline):
    if ELIDED.search(text):
        pytest.skip("elided with ... or …: pseudo-code, not a command line")
    root = _root()
    calls = _tts_invocations(text)
    assert calls, text
    for args in calls:
        for variant in _variants(args):
            problem = _check(root, variant, inline)
            if text in COUNTEREXAMPLES:
                assert problem, f"{where}: `{text}` is quoted as a mistake but parses"
            else:
                assert problem is None, f"{where}: `{text}`: {problem}"


def test_the_checker_catches_what_the_docs_must_not_say():
    """The check itself can fail: an option that is gone, a misused short flag, a bad value."""
    root = _root()
    bad = ["tts aggregate gen.jsonl -m majority", "tts generate p.jsonl --no-such-option",
           "tts eval agg.jsonl --truncated sometimes", "tts nosuch run.jsonl", "tts generate p.jsonl -n 0",
           "tts plot nosuch x.jsonl", "tts eval --nope"]
    for text in bad:
        assert any(_check(root, v, inline=True) for args in _tts_invocations(text) for v in _variants(args)), text
    good = "tts aggregate gen.jsonl -a majority 2> log.txt | tts eval - --json > out.json  # note"
    assert _tts_invocations(good) == [["aggregate", "gen.jsonl", "-a", "majority"], ["eval", "-", "--json"]]
    assert _tts_invocations("tts eval x.jsonl --curve 1,2 --window 64 > o.json") == \
        [["eval", "x.jsonl", "--curve", "1,2", "--window", "64"]]


def _runnable(pattern):
    return [(w, t) for w, t, inline in COMMAND_LINES if not inline and re.match(pattern, t)]


# The documented lines that run on a pool without a model: aggregate a `gen.jsonl`, evaluate the
# `agg.jsonl` it writes (docs/aggregators.md, docs/evaluation.md), in the order the docs give them.
POOL_LINES = _runnable(r"tts (aggregate gen\.jsonl|eval agg\.jsonl)")


def _pool(n_records=3, n=8):
    import random

    rng = random.Random(0)
    records = []
    for r in range(n_records):
        samples = []
        for i in range(n):
            answer = rng.choice([r + 3, r + 3, r + 4])
            tokens = rng.randrange(20, 60)
            samples.append({"i": i, "text": f"We add them. The answer is {answer}.", "finish": "stop",
                            "n_tokens": tokens, "mean_logprob": -rng.random(), "confidence": 1 + rng.random(),
                            "self_certainty": rng.random(), "entropy": rng.random()})
            samples[-1]["logprob"] = samples[-1]["mean_logprob"] * tokens
        records.append({"id": r, "answer": str(r + 3), "samples": samples})
    return "".join(json.dumps(x) + "\n" for x in records)


def test_documented_pool_commands_run(tmp_path, monkeypatch):
    assert len(POOL_LINES) >= 4, POOL_LINES
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gen.jsonl").write_text(_pool())
    for where, text in POOL_LINES:
        (args,) = _tts_invocations(text)
        r = tts(*args)
        assert r.code == 0, f"{where}: `{text}`: {r.stderr}"
        target = re.search(r"(?<!\d)>\s*(\S+)", text)
        if target:
            (tmp_path / target.group(1)).write_text(r.stdout)
    assert json.loads((tmp_path / "eval.json").read_text())["problems"] == 3


def test_documented_data_command_runs_on_the_problems_that_ship(monkeypatch):
    lines = _runnable(r"tts data mawps benchmarks/")
    assert lines
    monkeypatch.chdir(ROOT)
    for where, text in lines:
        args = _tts_invocations(text)[0]
        r = tts(*args)
        # the file ships 8 problems; a documented --limit N keeps the first N
        want = int(args[args.index("--limit") + 1]) if "--limit" in args else 8
        assert r.code == 0 and len(r.records()) == want, f"{where}: {r.stderr}"


# --- the README's demo table is what the demo code prints ----------------------------------------

DEMO_RUNS = ROOT / "tests" / "fixtures" / "demo"


def _demo_steps():
    """From benchmarks/demo.sh: {run: (generate arguments, aggregate arguments)}."""
    script = (ROOT / "benchmarks" / "demo.sh").read_text().replace("\\\n", " ")
    steps = {}
    for gen, name, agg in re.findall(
            r'tts generate "\$out/prompts\.jsonl" ([^|]+)\|\s*tee "\$out/(\w+)\.gen\.jsonl" \| tts aggregate ([^>]+)>',
            script):
        steps[name] = (shlex.split(gen), shlex.split(agg))
    return steps


def test_readme_demo_table_is_what_the_demo_prints_for_the_committed_runs():
    """The committed runs are raw `tts generate` outputs of `make demo` on the problems that ship;
    aggregating them as demo.sh does and printing them with benchmarks/demo_table gives the README's
    table, line for line."""
    from benchmarks.demo_table import read, table

    steps = _demo_steps()
    assert set(steps) == {"greedy", "sampled"}
    common = dict(re.findall(r"(--[\w-]+) (\S+)", re.search(r"common=\(([^)]*)\)",
                                                              (ROOT / "benchmarks" / "demo.sh").read_text()).group(1)))
    aggregated = {}
    for name, (gen, agg) in steps.items():
        records = read(DEMO_RUNS / f"{name}.gen.jsonl")
        # the committed run is the demo's: its problems, sample count and seed
        problems = [json.loads(x) for x in (ROOT / "benchmarks" / "fallback_problems.jsonl").read_text().splitlines()
                    if x.strip()]
        assert len(records) == len(problems)
        assert all(r["prompt"].startswith(p["input"]) for r, p in zip(records, problems))
        assert records[0]["run"]["n"] == int(gen[gen.index("-n") + 1])
        assert records[0]["run"]["seed"] == int(common["--seed"])
        assert records[0]["run"]["max_new_tokens"] == int(common["--max-new-tokens"])
        r = tts("aggregate", DEMO_RUNS / f"{name}.gen.jsonl", *agg)
        assert r.code == 0, r.stderr
        aggregated[name] = r.records()
    printed = table(aggregated["greedy"], aggregated["sampled"])
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"What `make demo` prints.*?```\n(.*?)```", readme, re.S).group(1)
    assert [x.rstrip() for x in block.strip("\n").splitlines()] == [x.rstrip() for x in printed.splitlines()]

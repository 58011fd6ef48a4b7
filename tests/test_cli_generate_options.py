"""`tts generate`'s issue-#15 options through the real command: soft-mode warnings, progress lines
for batch jobs, trustworthy --resume, --system / --show-prompt, --limit."""
import re

import orjson
import pytest

from tests.cli import tts
from strategies.tiny import byte_tokenizer

TINY = ["--model", "tiny-random", "--max-new-tokens", "6"]


def lines(*objs):
    return "".join(orjson.dumps(o).decode() + "\n" for o in objs)


def warnings(stderr):
    return [x for x in stderr.splitlines() if x.startswith("tts: warning:")]


def test_soft_mode_warnings_once_and_only_when_due():
    r = tts("generate", "--mode", "soft", "-n", "2", "--quiet", *TINY, input=lines({"prompt": "a"}, {"prompt": "b"}))
    assert r.code == 0, r.stderr
    w = warnings(r.stderr)
    assert len(w) == 2  # once per run, not per record
    assert "--noise none" in w[0] and "identical" in w[0] and "--noise gumbel" in w[0]
    # the tiny model's tokenizer has no </think> token and its template none either
    tok = byte_tokenizer()
    assert "</think>" not in tok.get_vocab() and "</think>" not in tok.chat_template
    assert "'</think>'" in w[1] and "--think-end" in w[1] and "--soft-budget" in w[1]
    quiet = tts("generate", "--mode", "soft", "-n", "2", "--noise", "gumbel", "--soft-budget", "3", "--quiet", *TINY,
                input=lines({"prompt": "a"}))
    assert quiet.code == 0 and warnings(quiet.stderr) == []
    one = tts("generate", "--mode", "soft", "-n", "1", "--think-end", "END", "--quiet", *TINY, input=lines({"prompt": "a"}))
    assert one.code == 0 and warnings(one.stderr) == []  # one sample; a chosen think-end string


def test_think_marker_detection():
    from tts_cli.advice import has_marker

    tok = byte_tokenizer()
    assert not has_marker(tok, "</think>")
    tok.add_special_tokens({"additional_special_tokens": ["</think>"]})
    assert has_marker(tok, "</think>")
    tok = byte_tokenizer()
    tok.chat_template = tok.chat_template + "{% if add_generation_prompt %}<think>\n{% endif %}</think>"
    assert has_marker(tok, "</think>")


def test_help_says_models_without_markers_need_think_end_and_budget():
    out = tts("generate", "--help").stdout
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    assert "without thinking markers" in flat and "--soft-budget" in flat


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_PROGRESS_SECONDS", "0")  # a line at every opportunity
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"p{i}"} for i in range(4))) + "\n")  # a blank line is no record
    r = tts("generate", inp, "-n", "2", "--batch-size", "2", *TINY)
    assert r.code == 0, r.stderr
    err = r.stderr.splitlines()
    assert "\r" not in r.stderr
    start = err[0]
    from strategies.models import pick_dtype

    dtype = str(pick_dtype("auto", "cpu")).removeprefix("torch.")   # --dtype auto: this CPU's choice
    for field in ("model=tiny-random", "device=cpu", f"dtype={dtype}", "records=4", "samples=2"):
        assert field in start
    prog = [x for x in err[1:-1] if re.match(r"tts: \d+/4 records, \d+/8 samples, \d+ tokens, [\d.]+ tok/s", x)]
    assert prog and len(prog) == len(err) - 2
    done = [int(x.split()[1].split("/")[0]) for x in prog]
    assert done == sorted(done) and done[-1] == 4
    samples = [int(x.split()[3].split("/")[0]) for x in prog]
    assert samples == sorted(samples) and samples[-1] == 8 and all(s >= 2 * d for s, d in zip(samples, done))
    # all four records in one batch: the tokens move before any record is written
    r = tts("generate", inp, "-n", "2", "--batch-size", "8", *TINY)
    counts = [re.match(r"tts: (\d+)/4 records, (\d+)/8 samples, (\d+) tokens", x) for x in r.stderr.splitlines()[1:-1]]
    assert any(m and m[1] == "0" and int(m[3]) > 0 for m in counts), r.stderr
    assert any("ETA" in x for x in prog)
    tokens = sum(s["n_tokens"] for rec in r.records() for s in rec["samples"])
    assert re.match(rf"tts: done: 4 records, {tokens} tokens in \d+:\d\d:\d\d \([\d.]+ tok/s\)$", err[-1])
    # the default interval (30 s) leaves only the start and summary lines on a short run
    monkeypatch.delenv("TTS_PROGRESS_SECONDS")
    r = tts("generate", inp, "--shard", "1/3", *TINY)
    assert "records=1 " in r.stderr.splitlines()[0] + " " and len(r.stderr.splitlines()) == 2
    assert tts("generate", inp, "--quiet", *TINY).stderr == ""


def test_resume_refuses_other_settings_and_reports_skips(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"p{i}"} for i in range(3))))
    out = tmp_path / "out.jsonl"
    first = tts("generate", inp, "-o", out, "--limit", "2", "--quiet", *TINY)
    assert first.code == 0 and len(out.read_text().splitlines()) == 2
    before = out.read_bytes()
    for extra, field in ((["-n", "2"], "n"), (["--temperature", "0.5"], "temperature"),
                         (["--mode", "soft", "--think-end", "E", "--soft-budget", "2"], "mode"),
                         (["--repetition-penalty", "1.2"], "repetition_penalty"),
                         (["--model", "tiny-random:qwen3"], "model")):
        r = tts("generate", inp, "-o", out, "--resume", "--quiet", *TINY, *extra)
        assert r.code == 2, extra
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert f"({field}: the file has" in r.stderr and "--force" in r.stderr and "line 1" in r.stderr
        assert out.read_bytes() == before  # nothing appended
    # fields that only change float rounding may differ
    ok = tts("generate", inp, "-o", out, "--resume", "--batch-size", "3", *TINY)
    assert ok.code == 0, ok.stderr
    assert "skipped 2 records already in" in ok.stderr
    assert [x["id"] for x in map(orjson.loads, out.read_text().splitlines())] == [0, 1, 2]
    forced = tts("generate", inp, "-o", out, "--resume", "--force", "-n", "2", "--quiet", *TINY)
    assert forced.code == 0 and "skipped 3 records" in forced.stderr
    assert tts("generate", inp, "--force", *TINY).code == 2  # --force alone means nothing


def rendered(messages):
    return byte_tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_system_reaches_the_model_input_ids(monkeypatch):
    from strategies.engine import Engine

    seen = []
    admit = Engine.admit
    monkeypatch.setattr(Engine, "admit", lambda self, req: seen.append(list(req.prompt_ids)) or admit(self, req))
    inp = lines({"prompt": "What is 2+2?"},
                {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "hi"}]})
    r = tts("generate", "--system", "You are terse.", "--quiet", *TINY, input=inp)
    assert r.code == 0, r.stderr
    assert r.records()[0]["run"]["system"] == "You are terse."
    tok = byte_tokenizer()
    want = tok.apply_chat_template([{"role": "system", "content": "You are terse."},
                                    {"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want
    assert seen[0] == list(want)
    # a record's own system message wins
    own = tok.apply_chat_template([{"role": "system", "content": "own"}, {"role": "user", "content": "hi"}],
                                  add_generation_prompt=True, tokenize=True)
    own = own["input_ids"] if hasattr(own, "keys") else own
    assert seen[1] == list(own)
    r = tts("generate", "--system", "x", "--raw", *TINY, input=inp)
    assert r.code == 2 and "--raw" in r.stderr


def test_show_prompt_prints_the_rendered_prompt_and_loads_no_model(monkeypatch):
    import strategies.models

    def no_model(*a, **k):
        raise AssertionError("--show-prompt must not load the model")

    monkeypatch.setattr(strategies.models, "load", no_model)
    inp = lines({"id": "a", "prompt": "first"}, {"id": "b", "prompt": "second"})
    r = tts("generate", "--show-prompt", "--system", "Be brief.", "--shard", "1/2", *TINY, input=inp)
    assert r.code == 0 and r.stdout == ""
    want = rendered([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "second"}])
    assert r.stderr.rstrip("\n") == want.rstrip("\n")
    bad = tts("generate", "--show-prompt", *TINY, input=lines({"nope": 1}))
    assert bad.code == 2 and "line 1" in bad.stderr


def test_limit_counts_after_shard_and_resume(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"p{i}"} for i in range(10))))
    r = tts("generate", inp, "--shard", "1/3", "--limit", "2", "--quiet", *TINY)
    assert [x["id"] for x in r.records()] == [1, 4]
    out = tmp_path / "out.jsonl"
    tts("generate", inp, "-o", out, "--limit", "3", "--quiet", *TINY)
    r = tts("generate", inp, "-o", out, "--resume", "--limit", "2", "--quiet", *TINY)
    assert r.code == 0, r.stderr
    assert [x["id"] for x in map(orjson.loads, out.read_text().splitlines())] == [0, 1, 2, 3, 4]


def test_generate_help_groups_every_option_into_a_panel():
    """--help is long; each option sits in a named panel (Sampling, Model..., Input and output, the
    modes', pruning's, ...), so the generic "Options" box holds only --help."""
    import typer.main

    from tts_cli.app import app

    cmd = typer.main.get_command(app).commands["generate"]
    loose = [p.opts[0] for p in cmd.params
             if type(p).__name__ == "TyperOption" and not getattr(p, "rich_help_panel", None)]
    assert loose == [], loose
    out = tts("generate", "--help").stdout
    panels = re.findall(r"╭─ (.+?) ─", out)
    assert panels[:5] == ["Arguments", "Options", "Sampling", "Model, device and batching",
                          "Input and output (docs/format.md)"], panels


def test_a_prompt_that_leaves_less_room_than_max_new_tokens_is_named_before_decoding(tmp_path):
    from strategies.models import load
    from strategies.runner import GenerateOptions, prompt_ids

    inp = tmp_path / "in.jsonl"
    inp.write_text(lines({"id": "a", "prompt": "hello"}, {"id": "b", "prompt": "hi"}))
    loaded = load("tiny-random")
    context = loaded.config.max_position_embeddings
    room = context - len(prompt_ids({"prompt": "hello"}, loaded.tokenizer, GenerateOptions()))
    r = tts("generate", inp, "-m", "tiny-random", "--max-new-tokens", str(room + 5), "-q")
    assert r.code == 0, r.stderr
    warn = [x for x in r.stderr.splitlines() if "leave room" in x]
    assert len(warn) == 1 and warn[0].startswith("tts: warning: line 1:") and f"room for {room} of" in warn[0]
    assert all(s["n_tokens"] <= room for s in r.records()[0]["samples"])

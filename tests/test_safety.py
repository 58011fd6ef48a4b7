"""Nothing lost, nothing silent: outputs that are inputs, directories or locked by another writer,
--resume onto damaged or foreign files, duplicate and null ids, and the one-line refusals that
must come before any model work. Every check compares the files on disk byte for byte with what
was there before, or counts records independently; messages are checked only for what they must
name (the option, the line, the process)."""
import os
import subprocess
import sys

import orjson
import pytest

import strategies.models as models
from tests.cli import tts

TINY = ["-m", "tiny-random", "--max-new-tokens", "3", "-q"]


def jsonl(*objs) -> str:
    return "".join(orjson.dumps(o).decode() + "\n" for o in objs)


def one_line(r) -> str:
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    text = r.stderr.strip()
    assert len(text.splitlines()) == 1 and text.startswith("tts: error: ") and "Traceback" not in text, text
    return text


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text(jsonl(*({"id": i, "prompt": f"{i} + {i}?"} for i in range(1, 5))))
    return p


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model is looked up: the refusal must come before model work."""
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the refusal")

    for name in ("load", "load_meta", "load_tokenizer", "resolve"):
        monkeypatch.setattr(models, name, boom)


RUN = {"id": 1, "answer": "4", "run": {"model": "tiny-random"},
       "samples": [{"i": 0, "text": "so 4", "finish": "stop", "trace": {"ids": [1], "logprob": [-0.1],
                                                                         "confidence": [1.0]}}]}


@pytest.mark.parametrize("argv", [
    ["generate", "{in}", "-o", "{out}", *TINY],
    ["aggregate", "{in}", "-a", "majority", "-o", "{out}"],
    ["data", "jsonl", "{in}", "-o", "{out}"],
    ["prune", "{in}", "--method", "deepconf", "-o", "{out}"],
    ["show", "{in}", "--html", "{out}"],
], ids=["generate", "aggregate", "data", "prune", "show-html"])
@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "dotted"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, argv, alias, no_model):
    src = tmp_path / "p.jsonl"
    src.write_text(jsonl({**RUN, "prompt": "2 + 2?", "question": "2 + 2?"}))
    before = src.read_bytes()
    out = {"same": src, "symlink": tmp_path / "s.jsonl", "hardlink": tmp_path / "h.jsonl",
           "dotted": tmp_path / "." / "sub" / ".." / "p.jsonl"}[alias]
    (tmp_path / "sub").mkdir()
    if alias == "symlink":
        out.symlink_to(src)
    if alias == "hardlink":
        os.link(src, out)
    text = one_line(tts(*(a.format(**{"in": src, "out": out}) for a in argv)))
    assert str(out) in text
    assert src.read_bytes() == before


@pytest.mark.parametrize("argv", [
    ["generate", "{in}", "-o", "{dir}", *TINY],
    ["generate", "{in}", "-o", "{dir}", "--resume", *TINY],
    ["aggregate", "{run}", "-a", "majority", "-o", "{dir}"],
    ["data", "jsonl", "{in}", "-o", "{dir}"],
    ["prune", "{run}", "--method", "deepconf", "-o", "{dir}"],
    ["show", "{run}", "--html", "{dir}"],
    ["softcot", "train", "{train}", "-o", "{dir}"],
    ["generate", "{in}", "-o", "{in}/x.jsonl", *TINY],
    ["softcot", "train", "{train}", "-o", "{in}/x.safetensors"],
])
def test_output_directory_or_under_a_file_is_one_line_before_model_work(tmp_path, prompts, argv, no_model):
    run = tmp_path / "run.jsonl"
    run.write_text(jsonl(RUN))
    train = tmp_path / "train.jsonl"  # good training data: only the output is wrong
    train.write_text(jsonl({"question": "1 + 1?", "answer": "2\n#### 2"}))
    (tmp_path / "d").mkdir()
    paths = {"in": prompts, "run": run, "train": train, "dir": tmp_path / "d"}
    text = one_line(tts(*(a.format(**paths) for a in argv)))
    assert "-o" in text or "--html" in text
    assert os.listdir(tmp_path / "d") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot be tested")
@pytest.mark.parametrize("argv", [["generate", "{in}", "-o", "{out}", *TINY], ["aggregate", "{in}", "-a", "majority", "-o", "{out}"]])
def test_unwritable_output_is_one_line_before_model_work(tmp_path, prompts, argv, no_model):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "cannot write" in one_line(tts(*(a.format(**{"in": prompts, "out": locked / "o.jsonl"}) for a in argv)))
    finally:
        locked.chmod(0o700)


def test_softcot_train_checks_its_output_before_training(tmp_path, no_model):
    data = tmp_path / "train.jsonl"
    data.write_text(jsonl({"question": "1 + 1?", "answer": "2\n#### 2"}))
    one_line(tts("softcot", "train", data, "-o", tmp_path))


def test_failed_command_leaves_no_new_output_and_an_old_one_untouched(tmp_path, prompts):
    new = tmp_path / "new.jsonl"
    r = tts("generate", prompts, "-o", new, "-m", "no-such-model")
    assert r.code == 2 and not new.exists()
    old = tmp_path / "old.jsonl"
    old.write_text("precious\n")
    assert tts("generate", prompts, "-o", old, "-m", "no-such-model").code == 2
    assert old.read_text() == "precious\n"


def _full_run(tmp_path, prompts):
    out = tmp_path / "full.jsonl"
    r = tts("generate", prompts, "-o", out, *TINY)
    assert r.code == 0, r.stderr
    return out.read_bytes()


def test_resume_refuses_a_bad_middle_line_and_leaves_the_file(tmp_path, prompts):
    lines = _full_run(tmp_path, prompts).splitlines(keepends=True)
    damaged = lines[0] + b"not json\n" + b"".join(lines[2:3])
    out = tmp_path / "out.jsonl"
    out.write_bytes(damaged)
    text = one_line(tts("generate", prompts, "-o", out, "--resume", *TINY))
    assert f"{out} line 2" in text and "--resume" in text
    assert out.read_bytes() == damaged


@pytest.mark.parametrize("content", ["<!doctype html>\n<html></html>\n", "[1, 2]\n", '{"id": 1}\n{"id": 1}\n',
                                     '{"run": {}}\n'])
def test_resume_refuses_files_tts_generate_did_not_write(tmp_path, prompts, content):
    out = tmp_path / "report.html"
    out.write_text(content)
    one_line(tts("generate", prompts, "-o", out, "--resume", *TINY))
    assert out.read_text() == content


def test_resume_repairs_only_a_torn_last_line(tmp_path, prompts):
    full = _full_run(tmp_path, prompts)
    lines = full.splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:2]) + lines[2][:40])  # killed while writing the third record
    r = tts("generate", prompts, "-o", out, "--resume", *TINY)
    assert r.code == 0, r.stderr
    assert out.read_bytes() == full


def test_resume_after_refusing_nothing_changes_when_all_done(tmp_path, prompts):
    full = _full_run(tmp_path, prompts)
    out = tmp_path / "out.jsonl"
    out.write_bytes(full)
    assert tts("generate", prompts, "-o", out, "--resume", *TINY).code == 0
    assert out.read_bytes() == full


@pytest.mark.parametrize("records,line", [
    ([{"id": 1, "prompt": "a"}, {"id": 2, "prompt": "b"}, {"id": 1, "prompt": "c"}], 3),
    ([{"id": "x", "prompt": "a"}, {"id": None, "prompt": "b"}], 2),
    ([{"prompt": "a"}, {"id": 1, "prompt": "b"}], 2),  # line 1's id is its line number, 1
])
@pytest.mark.parametrize("stdin", [False, True])
def test_duplicate_and_null_ids_are_refused_with_the_line(tmp_path, records, line, stdin, monkeypatch):
    src = tmp_path / "ids.jsonl"
    src.write_text(jsonl(*records))
    if not stdin:  # a file is read through before the model loads
        monkeypatch.setattr(models, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    r = tts("generate", *TINY, input=src.read_text()) if stdin else tts("generate", src, *TINY)
    assert f"line {line}" in one_line(r)


def test_null_ids_are_not_appended_again_on_resume(tmp_path):
    """Before, `"id": null` records were written again on every resume; now the input is refused,
    and id-less records (the line number is the id) resume exactly."""
    src = tmp_path / "in.jsonl"
    src.write_text(jsonl({"prompt": "a"}, {"prompt": "b"}))
    out = tmp_path / "out.jsonl"
    assert tts("generate", src, "-o", out, *TINY).code == 0
    once = out.read_bytes()
    assert tts("generate", src, "-o", out, "--resume", *TINY).code == 0
    assert out.read_bytes() == once and len(once.splitlines()) == 2


HOLD = ("import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")


def test_a_second_writer_is_refused_naming_the_process(tmp_path, prompts):
    out = tmp_path / "out.jsonl"
    out.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["generate", prompts, "-o", out, "--resume", *TINY], ["generate", prompts, "-o", out, *TINY],
                     ["data", "jsonl", prompts, "--question-field", "prompt", "-o", out]):
            text = one_line(tts(*argv))
            assert f"process {holder.pid}" in text
        assert out.read_text() == ""
    finally:
        holder.kill()
        holder.wait()
    # the lock went with the process: the same command now runs, and its own lock ends with it
    assert tts("generate", prompts, "-o", out, *TINY).code == 0
    assert tts("generate", prompts, "-o", out, "--resume", *TINY).code == 0
    assert len(out.read_bytes().splitlines()) == 4


def test_two_concurrent_resumes_never_interleave(tmp_path):
    """Two processes resuming into one file: one runs, the other is refused at once; 8 ids, 8 lines."""
    src = tmp_path / "in.jsonl"
    src.write_text(jsonl(*({"id": i, "prompt": f"prompt {i}"} for i in range(8))))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    argv = [sys.executable, "-m", "tts_cli.app", "generate", str(src), "-o", str(out), "--resume",
            "-m", "tiny-random", "--max-new-tokens", "40", "--batch-size", "1", "-q"]
    procs = [subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    ids = [orjson.loads(line)["id"] for line in out.read_bytes().splitlines()]
    assert sorted(ids) == list(range(8)), results
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results  # the second may start after the first ended
    for code, err in results:
        if code == 2:
            assert "is writing this file" in err and len(err.strip().splitlines()) == 1


# --- one line, before any work ---------------------------------------------------------------------

def test_text_object_and_samples_not_a_list_name_the_line(tmp_path):
    bad_text = tmp_path / "t.jsonl"
    bad_text.write_text(jsonl(RUN, {**RUN, "id": 2, "samples": [{"i": 0, "text": {"v": 4}, "finish": "stop"}]}))
    not_list = tmp_path / "s.jsonl"
    not_list.write_text(jsonl({**RUN, "samples": {"i": 0}}))
    for argv in (["aggregate", bad_text, "-a", "majority"], ["eval", bad_text], ["plot", "signals", bad_text, "--json"],
                 ["show", bad_text, "--html", tmp_path / "r.html"], ["show", bad_text, "--id", "2"]):
        assert "line 2" in one_line(tts(*argv)), argv
    assert "line 1" in one_line(tts("show", not_list))


@pytest.mark.parametrize("which", ["signals", "trace"])
def test_plot_checks_the_image_format_first(tmp_path, which, monkeypatch):
    run = tmp_path / "run.jsonl"
    run.write_text(jsonl(RUN))
    import strategies.inspection.plots as plots

    monkeypatch.setattr(plots, f"plot_{which}", lambda *a, **k: (_ for _ in ()).throw(AssertionError("plotted")))
    assert ".png" in one_line(tts("plot", which, run, "-o", tmp_path / "fig.foo"))


@pytest.mark.parametrize("argv", [["generate", "--backend", "vllm", "-m", "tiny-random"],
                                  ["bench", "--against", "vllm", "-m", "tiny-random"]])
def test_vllm_with_a_tiny_model_fails_at_once(argv, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    text = one_line(tts(*argv, input=jsonl({"prompt": "x"})))
    assert "tiny-random" in text and "directory" in text


def test_no_command_may_reach_the_hub():
    code = ("import os, tts_cli.app, huggingface_hub.constants as c; "
            "print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "True"], out.stderr


def test_unreadable_input_is_reported_before_the_model_loads(tmp_path, no_model):
    assert "nope.jsonl" in one_line(tts("generate", tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("argv,value", [(["-n", "2", "-n", "-3"], "-3"), (["--top-p", "0.5", "--top-p", "2"], "2"),
                                        (["--samples=4", "-n", "0"], "0")])
def test_a_repeated_option_reports_the_value_that_was_refused(argv, value, no_model):
    text = one_line(tts("generate", *argv, input=""))
    assert f" {value}: must be" in text


def test_repetition_penalty_help_and_range_agree():
    import typer.main

    from tts_cli.app import app

    p = next(p for p in typer.main.get_command(app).commands["generate"].params if "--repetition-penalty" in p.opts)
    # what the help (and its range) says is accepted, is: anything above 0; 0 and below are refused
    assert p.min is None and "p > 0" in p.help
    src = jsonl({"prompt": "x"})
    assert tts("generate", "--repetition-penalty", "0.01", *TINY, input=src).code == 0
    assert "--repetition-penalty 0" in one_line(tts("generate", "--repetition-penalty", "0", *TINY, input=src))
    assert "--repetition-penalty -1" in one_line(tts("generate", "--repetition-penalty", "-1", *TINY, input=src))


def test_prune_takes_dash_m():
    text = one_line(tts("prune", "--method", "deepconf", "-m", "no-such-model", input=jsonl(RUN)))
    assert "no-such-model" in text


@pytest.mark.parametrize("argv", [["--noise", "gumbel"], ["--soft-budget", "64"], ["--projection", "p.pt"],
                                  ["--mode", "softcot", "--noise", "dirichlet"], ["--mode", "soft", "--projection", "p.pt"]])
def test_options_the_mode_ignores_are_refused(argv, no_model):
    assert argv[-2] in one_line(tts("generate", *argv, input=jsonl({"prompt": "x"})))


def test_mode_options_in_their_mode_are_accepted():
    r = tts("generate", "--mode", "soft", "--noise", "gumbel", "--soft-budget", "2", *TINY, input=jsonl({"prompt": "x"}))
    assert r.code == 0, r.stderr


@pytest.mark.parametrize("argv,names", [(["--html", "{r}", "--sample", "0"], "--sample")])
def test_show_options_of_the_other_view_are_refused(tmp_path, argv, names):
    run = tmp_path / "run.jsonl"
    run.write_text(jsonl(RUN))
    assert names in one_line(tts("show", run, *(a.format(r=tmp_path / "r.html") for a in argv)))
    assert not (tmp_path / "r.html").exists()


def test_max_new_tokens_beyond_the_context_is_refused_before_decoding(monkeypatch):
    from strategies.tiny import tiny_model

    context = tiny_model("llama")[0].config.max_position_embeddings
    import strategies.runner as runner

    monkeypatch.setattr(runner, "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    text = one_line(tts("generate", "-m", "tiny-random", "--max-new-tokens", context, input=jsonl({"prompt": "x"})))
    assert f"--max-new-tokens {context}" in text and str(context) in text

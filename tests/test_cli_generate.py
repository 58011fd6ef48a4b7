"""`tts generate` end to end on the tiny random model: the JSONL contract, errors, resume, shard."""
import signal
import subprocess
import sys
import time

import orjson
import pytest

from tests.cli import tts

TINY = ["--model", "tiny-random", "--max-new-tokens", "12", "--quiet"]


def assert_same_samples(a, b):
    """Same tokens and text; floats may differ in the last digit, since BLAS rounding depends on
    the batch's shape."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for sa, sb in zip(ra, rb):
            assert {k: v for k, v in sa.items() if not isinstance(v, float)} == \
                {k: v for k, v in sb.items() if not isinstance(v, float)}
            for k, v in sa.items():
                if isinstance(v, float):
                    assert v == pytest.approx(sb[k], rel=1e-4, abs=2e-4)


def lines(*objs):
    return "".join(orjson.dumps(o).decode() + "\n" for o in objs)


def test_output_contract():
    r = tts("generate", "-", "-n", "3", "--seed", "4", "--trace", *TINY,
            input=lines({"id": "q1", "prompt": "Hi", "answer": "5", "extra": [1]}, {"prompt": "Yo"}))
    assert r.code == 0, r.stderr
    recs = r.records()
    assert [x["id"] for x in recs] == ["q1", 2]  # missing id: the line number
    assert recs[0]["extra"] == [1] and recs[0]["answer"] == "5"
    run = recs[0]["run"]
    for key in ("tool", "version", "model", "mode", "n", "temperature", "top_p", "top_k", "min_p",
                "max_new_tokens", "seed"):
        assert key in run
    assert run["seed"] == 4 and run["n"] == 3 and run["mode"] == "discrete"
    for s in recs[0]["samples"]:
        assert s["finish"] in ("stop", "length")
        t = s["trace"]
        assert len(t["ids"]) == s["n_tokens"] == len(t["logprob"]) == len(t["entropy"])
        assert s["logprob"] == pytest.approx(sum(t["logprob"]), abs=1e-3)
        assert s["mean_logprob"] == pytest.approx(s["logprob"] / s["n_tokens"], abs=1e-3)
        assert s["confidence"] == pytest.approx(sum(t["confidence"]) / s["n_tokens"], abs=1e-3)
    assert [s["i"] for s in recs[0]["samples"]] == [0, 1, 2]


def test_same_seed_same_bytes_and_batch_size_does_not_matter():
    inp = lines(*({"id": i, "prompt": f"question {i}"} for i in range(5)))
    a = tts("generate", "-n", "3", "--seed", "9", *TINY, input=inp)
    b = tts("generate", "-n", "3", "--seed", "9", "--batch-size", "2", *TINY, input=inp)
    c = tts("generate", "-n", "3", "--seed", "9", *TINY, input=inp)
    assert a.stdout == c.stdout
    assert_same_samples([x["samples"] for x in a.records()], [x["samples"] for x in b.records()])


@pytest.mark.parametrize("bad,message", [
    ("{not json", "line 2"),
    ('{"id": 7}', "neither 'prompt' nor 'messages'"),  # 1 would be line 1's id (its line number)
    ('{"prompt": "   "}', "empty prompt"),
    ('{"prompt": "' + "x" * 600 + '"}', "longer than the model's context"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_input_names_the_line(bad, message):
    inp = lines({"prompt": "fine"}) + bad + "\n" + lines({"prompt": "also fine"})
    r = tts("generate", *TINY, input=inp)
    assert r.code == 2 and message in r.stderr and "2" in r.stderr
    assert len(r.records()) == 1  # the record before the bad line was written
    r = tts("generate", "--on-error", "skip", *TINY, input=inp)
    assert r.code == 0
    recs = r.records()
    assert len(recs) == 3 and "error" in recs[1] and "samples" not in recs[1]
    assert message in recs[1]["error"]


def test_shard_splits_and_concatenates():
    inp = lines(*({"id": i, "prompt": f"p{i}"} for i in range(7)))
    whole = {x["id"]: x for x in tts("generate", "--seed", "1", *TINY, input=inp).records()}
    parts = [tts("generate", "--seed", "1", "--shard", f"{i}/3", *TINY, input=inp).records() for i in range(3)]
    assert [x["id"] for x in parts[1]] == [1, 4]
    merged = {x["id"]: x for p in parts for x in p}
    assert merged == whole
    assert tts("generate", "--shard", "3/3", *TINY, input=inp).code == 2


def test_unknown_model_is_one_clear_line():
    r = tts("generate", "--model", "no/such-model-here", input=lines({"prompt": "x"}))
    assert r.code == 2 and "not found" in r.stderr and "tried" in r.stderr


def test_kill_then_resume_keeps_every_finished_record(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"prompt number {i}"} for i in range(300))))
    out = tmp_path / "out.jsonl"
    # float32: the resumed run batches its rows with other records than the uninterrupted one, which
    # leaves every token where it was only in float32 (docs/generators.md, "Randomness")
    f32 = ("--dtype", "float32")
    cmd = [sys.executable, "-m", "tts_cli.app", "generate", str(inp), "-o", str(out), "--seed", "2",
           "--batch-size", "4", "-n", "2", "--model", "tiny-random", "--max-new-tokens", "40", "--quiet", *f32]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = out.read_bytes()
    done = [orjson.loads(x) for x in kept.split(b"\n")[: kept.count(b"\n")]]
    assert 3 <= len(done) < 300
    assert [d["id"] for d in done] == list(range(len(done)))
    r = tts("generate", inp, "-o", out, "--resume", "--seed", "2", "-n", "2", "--model", "tiny-random",
            "--max-new-tokens", "40", "--quiet", *f32)
    assert r.code == 0, r.stderr
    resumed = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [d["id"] for d in resumed] == list(range(300))
    fresh = tts("generate", inp, "--seed", "2", "-n", "2", "--model", "tiny-random", "--max-new-tokens", "40",
                "--quiet", *f32).records()
    assert_same_samples([d["samples"] for d in resumed], [d["samples"] for d in fresh])


def test_closed_pipe_exits_quietly():
    script = (f"printf '{lines(*({'prompt': 'p%d' % i} for i in range(40)))}' | "
              f"{sys.executable} -m tts_cli.app generate --model tiny-random --max-new-tokens 30 | head -n 1")
    p = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=300)
    assert p.stdout.count("\n") == 1 and orjson.loads(p.stdout)["id"] == 1
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


def test_soft_mode_defaults_follow_the_paper():
    r = tts("generate", "--mode", "soft", "-n", "2", "--soft-budget", "3", "--think-end", "END", *TINY,
            input=lines({"prompt": "Hi"}))
    assert r.code == 0, r.stderr
    run = r.records()[0]["run"]
    assert (run["temperature"], run["top_p"], run["top_k"], run["min_p"], run["max_topk"]) == (0.6, 0.95, 30, 0.001, 10)
    assert (run["answer_temperature"], run["answer_top_p"], run["answer_top_k"], run["answer_min_p"]) == (0.6, 0.95, 30, 0.0)
    assert (run["cold_stop_entropy"], run["cold_stop_steps"], run["noise"]) == (0.01, 256, "none")
    for s in r.records()[0]["samples"]:
        assert s["soft"]["ended_by"] in ("budget", "eos", "think_end", "length")
    d = tts("generate", "-n", "1", *TINY, input=lines({"prompt": "Hi"})).records()[0]["run"]
    assert (d["temperature"], d["top_p"], d["top_k"], d["min_p"]) == (1.0, 1.0, 0, 0.0)


def test_compile_flag_runs_and_is_recorded():
    """--compile reaches the decoder (same tokens as without it) and the record says it ran."""
    args = ["generate", "-n", "2", "--temperature", "0", "--max-new-tokens", "8", *TINY]
    plain = tts(*args, input=lines({"prompt": "Hi"})).records()[0]
    compiled = tts(*args, "--compile", input=lines({"prompt": "Hi"})).records()[0]
    assert compiled["run"]["compile"] is True and "compile" not in plain["run"]
    assert "cuda_graphs" not in plain["run"]  # CPU: no graphs to speak of
    assert [s["text"] for s in compiled["samples"]] == [s["text"] for s in plain["samples"]]


def test_bench_json_reports_both_sides_of_the_same_work():
    r = tts("bench", "--model", "tiny-random", "--workload", "fixed", "--json")
    assert r.code == 0, r.stderr
    (out,) = r.records()
    # fixed: 32 samples x exactly 128 tokens on each side
    assert out["workload"] == "fixed" and out["tts_tokens"] == out["hf_tokens"] == 32 * 128
    assert out["ratio"] == pytest.approx(out["tts_tok_s"] / out["hf_tok_s"], rel=1e-2)
    assert out["tts_tok_s"] == pytest.approx(out["tts_tokens"] / out["tts_seconds"], rel=1e-2)
    assert 0 < out["peak_fraction"] and out["matmul_peak_gflops"] > 0
    assert "tts_eager_tok_s" not in out  # the graphs-off comparison is CUDA only
    # one prompt: the batched baseline is the per-prompt call itself
    assert out["hf_batched_tokens"] == out["hf_tokens"] and out["ratio_batched"] == out["ratio"]


def test_bench_json_reports_the_batched_baseline(monkeypatch):
    from strategies import benchmark

    # realistic's shape (several prompts, EOS honoured) at a size a test can afford
    monkeypatch.setitem(benchmark.WORKLOADS, "realistic", (3, 4, 12, False, 0.7))
    r = tts("bench", "--model", "tiny-random", "--workload", "realistic", "--json")
    assert r.code == 0, r.stderr
    (out,) = r.records()
    assert out["prompts"] == 3 and out["warmup"] == "short run, both sides"
    for side in ("tts", "hf", "hf_batched"):
        assert 0 < out[f"{side}_tokens"] <= 3 * 4 * 12, side
        # seconds are printed to the millisecond: on a fast machine a tiny run's rounding exceeds 1%
        secs = out[f"{side}_seconds"]
        assert out[f"{side}_tok_s"] == pytest.approx(out[f"{side}_tokens"] / secs, rel=max(1e-2, 6e-4 / secs)), side
    assert out["ratio"] == pytest.approx(out["tts_tok_s"] / out["hf_tok_s"], rel=1e-2)
    assert out["ratio_batched"] == pytest.approx(out["tts_tok_s"] / out["hf_batched_tok_s"], rel=1e-2)
    assert "hf_static_compile_tok_s" not in out and "ratio_static_compile" not in out  # CUDA only
    # the machine's state around the timings, and the process's peak memory
    assert len(out["probes"]) == 3 and all(p["gflops"] > 0 for p in out["probes"])
    gf = [p["gflops"] for p in out["probes"]]
    assert out["probe_spread"] == pytest.approx(max(gf) / min(gf) - 1, abs=2e-3)
    assert out["noisy"] == (out["probe_spread"] > 0.15)
    assert out["peak_rss_mib"] > 50
    # what is being timed goes to stderr as it starts, so a long benchmark is not silent
    assert "tts: bench: timing ours" in r.stderr and "tts: bench: timing generate()" in r.stderr


def test_noise_flags_probes_or_repeats_that_disagree():
    from strategies.benchmark import noise

    quiet = [{"gflops": 100.0, "load1": 0.1}, {"gflops": 108.0, "load1": 1.0}]
    assert noise(quiet)["noisy"] is False and noise(quiet)["probe_spread"] == 0.08
    assert noise(quiet, [(300.0, 340.0)])["noisy"] is False          # 13% apart
    busy = noise(quiet, [(334.0, 84.0)])                               # ours fell 4x while the peer ran
    assert busy["noisy"] is True and busy["repeat_spread"] == pytest.approx(334 / 84 - 1, abs=1e-3)
    assert noise(quiet + [{"gflops": 60.0, "load1": 3.0}])["noisy"] is True


def test_batched_baseline_does_the_per_prompt_work(tiny):
    """Left padding must not change what generate() computes: greedy rows of the one batched call
    (static cache or not) equal those of one call per prompt, so their useful tokens agree."""
    import torch

    from strategies import hf_baseline
    from strategies.benchmark import chat_ids
    from strategies.models import Loaded

    model, tok = tiny
    loaded = Loaded(model=model, tokenizer=tok, name="tiny", source="", sha256=None)
    ids = [chat_ids(tok, p) for p in ("Hi", "A longer prompt than the first one", "x")]
    eos = tok.eos_token_id
    per = hf_baseline.per_prompt(loaded, ids, 1, 10, False, 0.0)  # greedy: one row per prompt
    for static in (False, True):
        assert hf_baseline.batched(loaded, ids, 1, 10, False, 0.0, static=static).tokens == per.tokens
    # independent count: generate() per prompt, tokens up to and including the first EOS
    want = 0
    for x in ids:
        out = model.generate(torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long),
                             max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(x):].tolist()
        want += out.index(eos) + 1 if eos in out else len(out)
    assert per.tokens == want


@pytest.mark.parametrize("dtype,noted", [("bfloat16", True), ("float32", False)])
def test_a_resumed_bfloat16_run_says_it_may_differ_from_an_uninterrupted_one(tmp_path, dtype, noted):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(lines(*({"id": i, "prompt": f"p{i}"} for i in range(3))))
    assert tts("generate", inp, "-o", out, "--limit", "1", "--dtype", dtype, *TINY).code == 0
    r = tts("generate", inp, "-o", out, "--resume", "--dtype", dtype, *TINY)
    assert r.code == 0, r.stderr
    assert ("--dtype float32 resumes exactly" in r.stderr) == noted
    assert [orjson.loads(x)["id"] for x in out.read_bytes().splitlines()] == [0, 1, 2]

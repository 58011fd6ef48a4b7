"""`--backend vllm` against our sampler on the embedded model (skipped where vLLM is not
installed; `make test` installs its CPU build). One vLLM engine serves the in-process tests."""
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

pytest.importorskip("vllm")

from strategies.control import Controller  # noqa: E402
from strategies.generators.discrete import Discrete, DiscreteParams  # noqa: E402
from strategies.runner import GenerateOptions, generate  # noqa: E402

pytestmark = pytest.mark.integration

PROMPTS = [{"id": "a", "prompt": "What is 2+3?"},
           {"id": "b", "prompt": "Tom has 3 apples and buys 5 more. How many apples does he have?"},
           {"id": "c", "prompt": "Name three colors."}]
TOKENS = 24


@pytest.fixture(scope="module")
def meta():
    from strategies.models import load_meta

    return load_meta("smollm2-135m", "cpu", "float32")


@pytest.fixture(scope="module")
def llm(meta):
    from strategies.vllm_backend import default_engine_args, start_llm

    args = default_engine_args(meta.source, "float32", "cpu", 0)
    args.update(enforce_eager=True, kv_cache_memory_bytes=1 << 30, max_model_len=1024)
    engine = start_llm(args)
    yield engine
    engine.llm_engine.engine_core.shutdown()


def vllm_run(meta, llm, params, n=1, controller=None, **opts):
    from strategies.vllm_backend import VLLMBackend

    o = GenerateOptions(n=n, max_new_tokens=TOKENS, trace=True, backend="vllm", **opts)
    gen = Discrete(params)
    backend = VLLMBackend(meta.source, meta.tokenizer, gen, dtype="float32", device="cpu", max_new_tokens=TOKENS,
                          seed=o.seed, controller=controller, llm=llm, stop=o.stop, ignore_eos=o.ignore_eos)
    return list(generate(PROMPTS, meta, gen, o, controller=controller, backend=backend)), backend


def test_greedy_equals_our_greedy_and_exact_signals_agree(meta, llm, real_model):
    ours = list(generate(PROMPTS, real_model, Discrete(DiscreteParams(temperature=0.0)),
                         GenerateOptions(n=1, max_new_tokens=TOKENS, trace=True)))
    theirs, _ = vllm_run(meta, llm, DiscreteParams(temperature=0.0))
    for a, b in zip(ours, theirs):
        ta, tb = a["samples"][0]["trace"], b["samples"][0]["trace"]
        assert ta["ids"] == tb["ids"]
        assert a["samples"][0]["text"] == b["samples"][0]["text"]
        for k in ("logprob", "confidence"):  # exact: the same numbers within float32 rounding
            np.testing.assert_allclose(tb[k], ta[k], atol=2e-3)
        # labelled lower bounds: never above the exact value
        for k in ("entropy", "self_certainty"):
            assert np.all(np.array(tb[k]) <= np.array(ta[k]) + 2e-3), k
    assert theirs[0]["run"]["signals"]["entropy"].startswith("lower bound")
    assert theirs[0]["run"]["signals"]["confidence"] == "exact"


def test_sampling_is_seeded_per_trace(meta, llm):
    p = DiscreteParams(temperature=1.0)
    one, _ = vllm_run(meta, llm, p, n=3)
    two, _ = vllm_run(meta, llm, p, n=3)
    texts = [[s["text"] for s in r["samples"]] for r in one]
    assert texts == [[s["text"] for s in r["samples"]] for r in two]
    assert any(len(set(t)) > 1 for t in texts)  # the traces of a prompt are not copies
    other, _ = vllm_run(meta, llm, p, n=3, seed=1)
    assert texts != [[s["text"] for s in r["samples"]] for r in other]


class StopSecond(Controller):
    """Stops sample 1 of every prompt once it has 3 tokens."""

    def step(self, rows):
        return [(r, "pruned") for r in rows if r.i == 1 and len(r.ids) >= 3]


def test_a_stopped_trace_is_aborted_in_vllm(meta, llm):
    seen_after_stop: list = []
    stopped: set = set()
    from strategies.vllm_backend import VLLMBackend

    real_step = VLLMBackend.step

    def watched(self, active):
        outs = self.engine.step
        def spy():
            res = outs()
            seen_after_stop.extend(o.request_id for o in res if o.request_id in stopped)
            return res
        self.engine.step = spy
        try:
            real_step(self, active)
        finally:
            self.engine.step = outs
        stopped.update(r.state["vllm_id"] for r in active if r.finish == "pruned")

    VLLMBackend.step = watched
    try:
        recs, backend = vllm_run(meta, llm, DiscreteParams(temperature=0.0), n=2, controller=StopSecond(),
                                 ignore_eos=True)
    finally:
        VLLMBackend.step = real_step
    assert [s["n_tokens"] for r in recs for s in r["samples"]] == [TOKENS, 3] * len(PROMPTS)
    assert [s["finish"] for r in recs for s in r["samples"]] == ["length", "pruned"] * len(PROMPTS)
    assert stopped and not seen_after_stop   # vLLM returned nothing more for an aborted trace
    assert not backend.engine.has_unfinished_requests()


def test_cli_writes_only_jsonl_to_stdout(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(orjson.dumps(p).decode() + "\n" for p in PROMPTS[:2]))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # vLLM starts its engine in a new process: the entry point must be importable and guarded
    script = "from tts_cli.app import main\nif __name__ == '__main__':\n    main()\n"
    r = subprocess.run([sys.executable, "-c", script, "generate", str(inp), "--backend", "vllm", "-n", "2",
                        "--max-new-tokens", "8", "--engine-arg", "enforce_eager=true",
                        "--engine-arg", f"kv_cache_memory_bytes={1 << 30}", "--engine-arg", "max_model_len=1024"],
                       capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]   # every stdout line is a record
    assert [x["id"] for x in recs] == ["a", "b"] and all(len(x["samples"]) == 2 for x in recs)
    assert recs[0]["run"]["backend"] == "vllm" and recs[0]["run"]["engine_args"]["enforce_eager"] is True


def test_peer_benchmark_times_exactly_the_asked_lengths(meta, llm):
    from strategies.benchmark import chat_ids, time_vllm

    ids = [chat_ids(meta.tokenizer, p["prompt"]) for p in PROMPTS[:2]]
    lengths = [5, 7, 3, 9]
    t = time_vllm(llm, ids, 2, lengths, 0.7)
    assert t.tokens == sum(lengths) and t.seconds > 0


def test_many_seeded_prompts_at_once_survive_on_cpu(meta, llm):
    """64 seeded traces of ~110-token prompts submitted together: with chunked prefill (vLLM's
    default) a split prefill rewinds a seeded CPU generator and kills the engine; our CPU engine
    arguments prefill prompts whole, so every trace completes."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from strategies.vllm_backend import stdout_to_stderr
    from strategies.benchmark import chat_ids, gsm8k_prompts

    ids = [chat_ids(meta.tokenizer, p) for p in gsm8k_prompts(4)]
    assert min(len(i) for i in ids) > 60
    prompts = [TokensPrompt(prompt_token_ids=i) for i in ids for _ in range(16)]
    params = [SamplingParams(temperature=0.7, max_tokens=2, ignore_eos=True, seed=j) for j in range(len(prompts))]
    with stdout_to_stderr():
        outs = llm.generate(prompts, params, use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [2] * 64


def test_peer_benchmark_runs_vllm_in_a_child_at_its_own_default_dtype(meta, monkeypatch):
    """--against vllm --dtype auto: vLLM in its own process at the dtype it picks for the model
    (reported), ours at ours; the tokens are the asked lengths on both sides, and the probes and
    the before/after spread decide `noisy`."""
    from strategies import benchmark
    from strategies.models import load

    monkeypatch.setitem(benchmark.PEER_WORKLOADS, "fixed", (1, 2, 6, 0.7))
    loaded = load(meta.name, "cpu", "float32")
    out = benchmark.bench_vs_vllm(loaded, "fixed", engine_args={"enforce_eager": True, "max_model_len": 1024},
                                  peer_dtype="auto")
    assert out["vllm_tokens"] == 12 and out["tts_tokens"] == 2 * 12   # ours is timed before and after
    assert out["vllm_dtype_asked"] == "auto" and out["vllm_dtype"] in ("bfloat16", "float32", "float16")
    assert out["dtype"] == "float32"
    spreads = [out["probe_spread"], out["repeat_spread"]]
    assert out["noisy"] == any(x > benchmark.NOISE for x in spreads) and len(out["probes"]) == 4

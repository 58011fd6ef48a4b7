"""`--backend ray` on a local single-node Ray cluster writes the records `--backend vllm` writes
(slow: two vLLM start-ups, about a minute each on a CPU; skipped where Ray Data or vLLM is not
installed), and the driver's half of it (rows rebuilt from what Ray Data's stage returns) without
either."""
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from strategies.ray_backend import RayBackend, _postprocess
from strategies.rows import LENGTH, STOP, Request, Row
from strategies.vllm_backend import token_signals

ROOT = Path(__file__).resolve().parents[1]


def _generate(tmp_path, backend: str, *extra) -> list[dict]:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "prompt": "What is 2+3?"}\n{"id": "b", "prompt": "Name a colour."}\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)   # a local cluster, whatever the shell points at
    r = subprocess.run([sys.executable, "-m", "tts_cli.app", "generate", str(src), "--backend", backend,
                        "-n", "2", "--temperature", "0", "--max-new-tokens", "12", "--trace",
                        "--engine-arg", "enforce_eager=true", *extra],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [orjson.loads(line) for line in r.stdout.splitlines()]   # stdout is JSONL only


@pytest.mark.slow
@pytest.mark.integration
def test_greedy_ray_writes_the_records_vllm_writes(tmp_path):
    pytest.importorskip("vllm")
    pytest.importorskip("ray.data.llm")
    ray = _generate(tmp_path, "ray", "--engine-arg", "ray_num_cpus=2")
    vllm = _generate(tmp_path, "vllm")
    assert [r["id"] for r in ray] == ["a", "b"]
    assert len(ray) == len(vllm)
    for a, b in zip(ray, vllm):
        assert a["run"]["backend"] == "ray" and b["run"]["backend"] == "vllm"
        assert a["run"]["ray"]
        assert [s["trace"]["ids"] for s in a["samples"]] == [s["trace"]["ids"] for s in b["samples"]]
        assert a["samples"] == b["samples"]
        assert {k: v for k, v in a.items() if k != "run"} == {k: v for k, v in b.items() if k != "run"}
        differ = {k for k in a["run"].keys() | b["run"].keys() if a["run"].get(k) != b["run"].get(k)}
        assert differ <= {"backend", "ray", "engine_args"}


class _Tok:
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i % 26) for i in ids if i != 2)


def _driver(max_tokens=3, stop=(), ignore_eos=False) -> RayBackend:
    b = object.__new__(RayBackend)   # the driver's half only: no Ray, no vLLM
    b.tokenizer, b.vocab, b.eos = _Tok(), 50, {2}
    b.max_tokens, b.stop, b.ignore_eos = max_tokens, list(stop), ignore_eos
    b.progress, b.top_logprobs, b.tokens_generated = None, 2, 0
    return b


def test_rows_rebuilt_from_the_stage_output_carry_vllm_backends_signals():
    from types import SimpleNamespace as NS

    # what the stage returns: vLLM's logprobs as dicts, the sampled token once outside the top 20
    tops = [{5: {"logprob": -0.1, "rank": 1, "decoded_token": "f"}, 7: {"logprob": -2.5, "rank": 2, "decoded_token": "h"}},
            {9: {"logprob": -0.7, "rank": 1, "decoded_token": "j"}, 4: {"logprob": -0.9, "rank": 2, "decoded_token": "e"},
             11: {"logprob": -9.0, "rank": 31, "decoded_token": "l"}}]
    out = _postprocess({"trace": 0, "generated_tokens": [5, 11], "logprobs": tops, "other": 1})
    row = Row(Request(key="a", prompt_ids=[1], n=1), 0, None, 0, [], [])
    _driver()._fill(row, out)
    assert row.ids == [5, 11] and row.finish == STOP   # 2 < max_tokens
    for k, (top, tok) in enumerate(zip(tops, [5, 11])):
        want = token_signals({t: NS(logprob=v["logprob"], rank=v["rank"]) for t, v in top.items()}, tok, 50)
        got = (row.logprob[k], row.entropy[k], row.self_certainty[k], row.confidence[k])
        assert got == pytest.approx(want[:4])
        assert row.top_logprobs[k] == (want[4][:2], want[5][:2])


@pytest.mark.parametrize("tokens, stop, ignore_eos, finish", [
    ([3, 4], (), False, STOP),          # shorter than max_tokens
    ([3, 4, 5], (), False, LENGTH),     # the length limit
    ([3, 4, 2], (), False, STOP),       # EOS as the last allowed token
    ([3, 4, 2], (), True, LENGTH),      # ... ignored
    ([3, 4, 5], ("f",), False, STOP),   # a stop string completed by the last token
    ([3, 4, 5], ("z",), False, LENGTH),
])
def test_finish_reason_recovered_from_the_trace(tokens, stop, ignore_eos, finish):
    assert _driver(3, stop, ignore_eos).finish_of(tokens) == finish


class _Stage:
    """A stand-in for Ray Data's vLLM stage, faithful in what this test counts: every execution of
    a processed dataset starts the stage's replicas (Ray Data's actor pool lives as long as one
    execution), and finished traces come back lazily, in an order of their own."""

    def __init__(self, replicas: int):
        self.replicas, self.starts, self.emitted = replicas, 0, 0

    def from_items(self, items, override_num_blocks=None):
        return list(items)

    def __call__(self, items):
        stage = self

        class Processed:
            def iter_rows(self):
                stage.starts += stage.replicas
                for item in sorted(items, key=lambda it: (it["trace"] % 3, it["trace"])):  # not input order
                    stage.emitted += 1
                    prompt = item["tokenized_prompt"]   # a trace's tokens: its prompt's, offset by its seed
                    toks = [(t + item["sampling_params"]["seed"]) % 40 + 3 for t in prompt[:2]]
                    yield _postprocess({"trace": item["trace"], "generated_tokens": toks,
                                        "logprobs": [{t: {"logprob": -0.5, "rank": 1}} for t in toks]})
        return Processed()


def test_replicas_start_once_for_a_run_of_several_chunks(capsys):
    """7 records in chunks of 3: one Ray Data execution for the whole run (the replicas start once,
    not once per chunk), records still in input order and yielded as soon as they and those before
    them are complete, each trace seeded as --backend vllm seeds it."""
    from types import SimpleNamespace as NS

    from strategies.rng import trace_seed

    stage = _Stage(replicas=2)
    b = _driver(max_tokens=5)
    b._processor, b._ray, b._params = stage, NS(data=stage), {"temperature": 1.0}
    b.seed, b.replicas, b.chunk_records, b.starts, b.chunks, b._started = 11, 2, 3, 0, 0, False
    reqs = [Request(key=f"r{k}", prompt_ids=[k + 3, k + 4, k + 5], n=2) for k in range(7)]
    got, emitted_at = [], []
    for req in b.run(iter(reqs)):
        got.append(req)
        emitted_at.append(stage.emitted)
    assert [r.key for r in got] == [r.key for r in reqs]
    assert stage.starts == 2   # 2 replicas, started once
    assert emitted_at[0] < 14   # the first record came out before the last trace finished
    for req in got:
        for row in req.rows:
            seed = trace_seed(11, req.key, row.i)
            assert row.ids == [(t + seed) % 40 + 3 for t in req.prompt_ids[:2]] and row.finish == STOP
    b.close()
    assert "ray: 2 replicas started once for 3 chunks" in capsys.readouterr().err

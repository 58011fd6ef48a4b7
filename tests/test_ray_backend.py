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

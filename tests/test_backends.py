"""The runner is backend-independent: a fake backend behind `--backend` gives the same JSONL
contract, resume, shard and error handling as our sampler, and a controller (a pruner) drives it
through the same scheduling loop (Backend.run)."""
import orjson
import pytest

from strategies.backend import Backend, Capabilities
from strategies.rng import row_rng
from strategies.rows import LENGTH, STOP, Row
from strategies.runner import BACKENDS, GenerateOptions, generate
from tests.cli import tts

EOS = 0


class FakeBackend(Backend):
    """Tokens drawn from each sample's own stream (seed, record id, sample index); a sample ends
    at EOS (drawn with probability 1/8 per step) or at max_new_tokens. Signals are functions of
    the token, so records are checkable without a model. Rows run `capacity` at a time."""

    name = "fake"
    instances: list = []

    def __init__(self, tokenizer, *, max_new_tokens, seed, controller=None, capacity=3):
        self.tokenizer, self.max_new_tokens, self.seed = tokenizer, max_new_tokens, seed
        self.controller, self.capacity = controller, capacity
        self.steps = self.tokens = 0
        self.widest = 0
        if controller is not None:
            controller.bind(self.text_of)
        FakeBackend.instances.append(self)

    @classmethod
    def create(cls, loaded, generator, opts, progress=None, controller=None):
        return cls(loaded.tokenizer, max_new_tokens=opts.max_new_tokens, seed=opts.seed, controller=controller)

    @staticmethod
    def static_fields(opts):
        return {"backend": "fake"}

    @classmethod
    def capabilities(cls):
        return Capabilities(modes=("discrete",), engine_args=True)

    def admit(self, req):
        if req.error is not None:
            return []
        req.rows = [Row(req, i, row_rng(self.seed, req.key, req.sample_offset + i), 0, [], []) for i in range(req.n)]
        req.unplaced = req.n
        if self.controller is not None:
            self.controller.begin(req)
        return list(req.rows)

    def place(self, row, active):
        active.append(row)
        row.started = True
        row.req.unplaced -= 1

    def step(self, active):
        self.widest = max(self.widest, len(active))
        for r in active:
            tok = EOS if r.rng.random() < 1 / 8 else int(r.rng.integers(ord("a"), ord("z") + 1))
            r.ids.append(tok)
            r.logprob.append(-tok / 100)
            r.entropy.append(tok / 50)
            r.self_certainty.append(1.0)
            r.confidence.append(self.confidence(r, tok))
            r.finish = STOP if tok == EOS else LENGTH if len(r.ids) >= self.max_new_tokens else None
        self.steps += 1
        self.tokens += len(active)
        if self.controller is not None:
            for r, why in self.controller.step([r for r in active if r.finish is None]):
                r.finish = why

    def confidence(self, row, tok):
        return tok / 10

    def text_of(self, row):
        return bytes(t for t in row.ids if t != EOS).decode()


class Unsure(FakeBackend):
    """Samples 0-1 are sure (confidence 1); later odd samples are unsure (0.5), even ones sure (2)."""

    def confidence(self, row, tok):
        return 1.0 if row.i < 2 else 0.5 if row.i % 2 else 2.0


@pytest.fixture(autouse=True)
def fake_registered(monkeypatch):
    monkeypatch.setitem(BACKENDS, "fake", FakeBackend)
    monkeypatch.setitem(BACKENDS, "unsure", Unsure)
    FakeBackend.instances.clear()


FAKE = ("--backend", "fake", "--model", "tiny-random", "--max-new-tokens", "12", "-n", "3")


def prompts(n: int) -> str:
    return "".join(orjson.dumps({"id": i, "prompt": f"question {i}"}).decode() + "\n" for i in range(n))


def expected_samples(rid, n=3, seed=0, max_new=12):
    """An independent replay of the fake's stream: what every sample must contain."""
    out = []
    for i in range(n):
        rng, ids = row_rng(seed, rid, i), []
        while True:
            tok = EOS if rng.random() < 1 / 8 else int(rng.integers(ord("a"), ord("z") + 1))
            ids.append(tok)
            if tok == EOS or len(ids) >= max_new:
                break
        out.append({"i": i, "text": bytes(t for t in ids if t != EOS).decode(), "n_tokens": len(ids),
                    "finish": "stop" if ids[-1] == EOS else "length",
                    "confidence": round(sum(t / 10 for t in ids) / len(ids), 4)})
    return out


def test_records_follow_the_contract_whatever_the_backend():
    r = tts("generate", *FAKE, input=prompts(5))
    assert r.code == 0, r.stderr
    recs = r.records()
    assert [x["id"] for x in recs] == list(range(5))
    for rec in recs:
        assert rec["run"]["backend"] == "fake" and rec["run"]["n"] == 3
        got = [{k: s[k] for k in ("i", "text", "n_tokens", "finish", "confidence")} for s in rec["samples"]]
        assert got == expected_samples(rec["id"])
    # the scheduling loop kept at most `capacity` rows running
    assert FakeBackend.instances[0].widest == 3


def test_native_and_fake_records_have_the_same_fields():
    fake = tts("generate", *FAKE, input=prompts(2)).records()
    native = tts("generate", "--model", "tiny-random", "--max-new-tokens", "12", "-n", "3", input=prompts(2)).records()
    assert set(fake[0]) == set(native[0])
    assert set(fake[0]["samples"][0]) == set(native[0]["samples"][0])
    assert set(fake[0]["run"]) - set(native[0]["run"]) == {"backend"}


def test_resume_and_shard_give_the_same_records(tmp_path):
    full = tts("generate", *FAKE, input=prompts(7)).records()
    inp = tmp_path / "in.jsonl"
    inp.write_text(prompts(7))
    out = tmp_path / "out.jsonl"
    assert tts("generate", inp, *FAKE, "--limit", "3", "-o", out).code == 0
    r = tts("generate", inp, *FAKE, "--resume", "-o", out)
    assert r.code == 0, r.stderr
    assert [orjson.loads(x) for x in out.read_bytes().splitlines()] == full
    shards = [rec for i in range(2) for rec in tts("generate", inp, *FAKE, "--shard", f"{i}/2").records()]
    assert sorted(shards, key=lambda x: x["id"]) == full


def test_bad_line_is_named_and_earlier_records_are_kept():
    bad = prompts(2) + "{not json\n" + prompts(1).replace('"id":0', '"id":9')
    r = tts("generate", *FAKE, input=bad)
    assert r.code != 0
    assert [x["id"] for x in r.records()] == [0, 1]
    errors = [x for x in r.stderr.splitlines() if x.startswith("tts: error")]
    assert len(errors) == 1 and "line 3" in errors[0]
    r = tts("generate", *FAKE, "--on-error", "skip", input=bad)
    assert r.code == 0
    recs = r.records()
    assert [x.get("id") for x in recs] == [0, 1, None, 9] and "error" in recs[2]


def test_a_pruner_drives_any_backend_through_the_same_loop():
    """DeepConf online on a fake backend: the 2 warm-up samples (confidence 1) set the threshold
    at 1; a later sample stops as soon as a full 2-token window's mean falls below it, i.e. every
    odd sample that reaches 2 tokens stops right there, and no other sample stops."""
    r = tts("generate", "--backend", "unsure", "--model", "tiny-random", "--max-new-tokens", "12", "-n", "6",
            "--prune", "deepconf", "--warmup", "2", "--window", "2", "--keep", "0.9", input=prompts(4))
    assert r.code == 0, r.stderr
    samples = [s for rec in r.records() for s in rec["samples"]]
    unpruned = {(rec["id"], s["i"]): s for rec in tts("generate", *FAKE, "-n", "6", input=prompts(4)).records()
                for s in rec["samples"]}
    n_stopped = 0
    for rec in r.records():
        for s in rec["samples"]:
            full = unpruned[(rec["id"], s["i"])]
            if s["i"] >= 2 and s["i"] % 2 and full["n_tokens"] > 2:
                assert (s["finish"], s["n_tokens"]) == ("low-confidence", 2)
                n_stopped += 1
            else:
                assert (s["finish"], s["n_tokens"]) == (full["finish"], full["n_tokens"])
    assert n_stopped > 0
    # a stopped sample consumed only its tokens: the backend ran exactly the records' total
    assert FakeBackend.instances[0].tokens == sum(s["n_tokens"] for s in samples)


def test_library_call_takes_a_started_backend():
    from strategies.models import load_meta
    from strategies.generators.discrete import Discrete

    loaded = load_meta("tiny-random")
    backend = FakeBackend(loaded.tokenizer, max_new_tokens=12, seed=0)
    opts = GenerateOptions(n=3, max_new_tokens=12, backend="fake")
    recs = list(generate([{"id": 4, "prompt": "hi"}], loaded, Discrete(), opts, backend=backend))
    got = [{k: s[k] for k in ("i", "text", "n_tokens", "finish", "confidence")} for s in recs[0]["samples"]]
    assert got == expected_samples(4)


def test_unknown_backend_and_bad_engine_args_are_one_line_errors():
    for args, needle in [(("--backend", "nope"), "expected one of"),
                         (("--backend", "fake", "--engine-arg", "novalue"), "KEY=VALUE"),
                         (("--engine-arg", "a=1"), "applies to --backend"),
                         (("--backend", "fake", "--mode", "soft"), "needs --backend native")]:
        r = tts("generate", "--model", "tiny-random", *args, input=prompts(1))
        errors = [x for x in r.stderr.splitlines() if x.startswith("tts: error")]
        assert r.code != 0 and len(errors) == 1 and needle in errors[0], (args, r.stderr)


def test_peer_benchmark_lengths_are_seeded_and_bounded():
    from strategies.benchmark import trace_lengths

    a = trace_lengths(64, 256)
    assert a == trace_lengths(64, 256) and a != trace_lengths(64, 256, seed=1)
    assert min(a) >= 16 and max(a) <= 256 and len(set(a)) > 20
    assert 100 <= sorted(a)[32] <= 200   # median 150 by construction (lognormal around log 150)


def test_bench_against_refuses_what_vllm_cannot_time():
    r = tts("bench", "--against", "vllm", "--mode", "soft", "--model", "tiny-random")
    assert r.code == 2 and "discrete" in r.stderr
    r = tts("bench", "--against", "nope", "--model", "tiny-random")
    assert r.code == 2 and "--against" in r.stderr


def test_aggregators_say_when_a_signal_is_approximated_and_refuse_a_missing_one():
    """A run's `signals` labels (another engine's): a method reading an approximated signal is
    noted on stderr once; one reading an unavailable signal refuses the record in one line."""
    def record(label):
        run = {"signals": {"logprob": "exact", "confidence": "exact", "entropy": label, "self_certainty": label}}
        samples = [{"i": i, "text": f"The answer is {a}.", "n_tokens": 5, "logprob": -1.0, "mean_logprob": -0.2,
                    "self_certainty": sc, "confidence": 3.0, "entropy": 1.0}
                   for i, (a, sc) in enumerate([(4, 2.0), (4, 1.0), (5, 3.0)])]
        return orjson.dumps({"id": 1, "run": run, "samples": samples}).decode() + "\n"

    r = tts("aggregate", "-a", "majority", "-a", "self-certainty", input=record("lower bound: test"))
    assert r.code == 0
    notes = [x for x in r.stderr.splitlines() if x.startswith("tts: note")]
    assert len(notes) == 1 and "self-certainty" in notes[0] and "lower bound: test" in notes[0]
    assert r.records()[0]["aggregates"]["self-certainty"]["answer"] == "5"
    r = tts("aggregate", "-a", "majority", input=record("lower bound: test"))
    assert r.code == 0 and "note" not in r.stderr          # majority reads no signal
    r = tts("aggregate", "-a", "borda", input=record("unavailable"))
    errors = [x for x in r.stderr.splitlines() if x.startswith("tts: error")]
    assert r.code != 0 and len(errors) == 1 and "self_certainty" in errors[0]


def test_our_side_of_the_peer_benchmark_decodes_exactly_the_drawn_lengths():
    """Request.limits: every row stops at its own length (EOS ignored), so both engines do the same work."""
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies.benchmark import time_tts
    from strategies.models import load

    lengths = [3, 9, 1, 5, 7, 2]
    t = time_tts(load("tiny-random"), Discrete(DiscreteParams(temperature=0.7)), ["a", "b"], 3, 12, True, 4,
                 limits=lengths)
    assert t.tokens == sum(lengths)


@pytest.mark.parametrize("longest,want_len,want_budget", [(2048, 2048, 8192), (131072, 32768, 32768), (None, 32768, 32768)])
def test_cpu_vllm_prefills_prompts_whole_within_its_budget(tmp_path, longest, want_len, want_budget):
    """On CPU a chunked prefill kills vLLM when traces are seeded (see default_engine_args): it is
    off, and a step's token budget holds the longest sequence, capped at 32k positions."""
    import json

    from strategies.vllm_backend import default_engine_args

    if longest is not None:   # None: no readable config, so the cap alone decides
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": longest}))
    args = default_engine_args(str(tmp_path), "float32", "cpu", 0)
    assert args["enable_chunked_prefill"] is False
    assert (args["max_model_len"], args["max_num_batched_tokens"]) == (want_len, want_budget)
    assert args["max_num_batched_tokens"] >= args["max_model_len"]
    assert "enable_chunked_prefill" not in default_engine_args(str(tmp_path), "bfloat16", "cuda", 0)


def test_the_command_line_asks_the_backend_what_it_supports(monkeypatch):
    # a backend that cannot stop rows nor run soft mode: both refused in the words it gave, before
    # any model work; without those options it runs
    class NoStops(FakeBackend):
        @classmethod
        def capabilities(cls):
            return Capabilities(modes=("discrete",), stop_rows=False,
                                why_not={"stop_rows": "this engine never looks back", "modes": "tokens only here"})

    monkeypatch.setitem(BACKENDS, "nostops", NoStops)
    base = ("generate", "--model", "tiny-random", "--backend", "nostops", "--max-new-tokens", "3", "--quiet")
    r = tts(*base, "--prune", "deepconf", input=prompts(1))
    assert r.code == 2 and "this engine never looks back" in r.stderr, r.stderr
    r = tts(*base, "--mode", "soft", input=prompts(1))
    assert r.code == 2 and "--mode soft needs --backend native: tokens only here" in r.stderr, r.stderr
    r = tts(*base, input=prompts(1))
    assert r.code == 0 and len(r.stdout.splitlines()) == 1, r.stderr

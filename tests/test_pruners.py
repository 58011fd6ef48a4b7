"""Pruners: DeepPrune's clustering on hand-built similarity matrices, DeepConf's threshold and stop
point against a computation done here by hand, the engine really stopping rows, replay == online,
aggregation without stopped samples, the judge metric, and the CLI's option errors."""
import re

import numpy as np
import pytest

from strategies.aggregators.api import aggregate_records, build_pool, parse_methods
from strategies.control import START, WAIT
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.pruners import build, settings
from strategies.pruners.auroc import auroc, tnr_at_fnr
from strategies.pruners.clustering import greedy_clusters, survivors
from strategies.pruners.judges import JUDGES, register
from strategies.pruners.replay import replay
from verifiers import equivalent
from strategies.pruners.settings import Prefix
from tests.cli import tts


def matrix_score(M, seen=None):
    def score(pairs):
        if seen is not None:
            seen.append(list(pairs))
        return [M[a][b] for a, b in pairs]
    return score


def cluster(M, **kw):
    kw = {"k1": 10, "tau": 0.5, "max_clusters": 32, "rng": np.random.default_rng(0), **kw}
    return greedy_clusters(len(M), matrix_score(M), **kw)


# two groups {0, 1, 3} and {2, 4}: 0.9 inside a group, 0.1 across
GROUPS = [[0, 1, 3], [2, 4]]
M = [[1.0 if a == b else 0.9 if any(a in g and b in g for g in GROUPS) else 0.1 for b in range(5)] for a in range(5)]


def test_clusters_follow_the_similarity_matrix():
    assert cluster(M) == [[0, 1, 3], [2, 4]]
    assert cluster(M, tau=0.95) == [[0], [1], [2], [3], [4]]          # nothing is similar enough
    assert cluster(M, tau=0.05) == [[0, 1, 2, 3, 4]]                  # everything is
    # at most K clusters: once 1 exists, every later trace joins the best one
    assert cluster(M, max_clusters=1) == [[0, 1, 2, 3, 4]]
    # two allowed under a strict tau: {0}, {1}; then 2 scores 0.1 with both (a tie: the first
    # cluster), 3 scores 0.9 with {0, 2}'s member 0 and 0.1 with 2 (mean 0.5) against 0.9 with {1},
    # and 4 scores (0.1 + 0.9 + ...) — worked out member by member:
    #   4 vs {0, 2, ...}: 0 -> 0.1, 2 -> 0.9 ; 4 vs {1, 3}: 0.1, 0.1
    assert cluster(M, tau=0.95, max_clusters=2) == [[0, 2, 4], [1, 3]]


def test_mean_over_members_decides_against_tau():
    # sample 3 scores 1.0 with 0 and 0 with 1 and 2: mean over the cluster {0, 1, 2} is 1/3
    S = np.eye(4)
    S[0, 1] = S[0, 2] = S[1, 2] = 0.8
    S[0, 3] = 1.0
    S = np.maximum(S, S.T)
    assert cluster(S) == [[0, 1, 2], [3]]
    assert cluster(S, tau=0.3) == [[0, 1, 2, 3]]


def test_k1_limits_the_members_compared_and_the_choice_decides():
    S = np.eye(4)
    S[0, 1] = S[0, 2] = S[1, 2] = 0.8
    S[0, 3] = 1.0
    S = np.maximum(S, S.T)
    outcomes = set()
    for seed in range(12):
        seen = []
        got = greedy_clusters(4, matrix_score(S, seen), k1=1, tau=0.5, max_clusters=32,
                              rng=np.random.default_rng(seed))
        last = seen[-1]  # sample 3 against one random member of {0, 1, 2}
        assert len(last) == 1 and last[0][1] == 3 and last[0][0] in (0, 1, 2)
        joined = last[0][0] == 0  # only member 0 scores above tau
        assert got == ([[0, 1, 2, 3]] if joined else [[0, 1, 2], [3]])
        outcomes.add(joined)
    assert outcomes == {True, False}  # the random choice really varies with the seed


def test_survivor_policies():
    cl = [[0, 3], [1, 2, 5, 6], [4]]
    assert survivors(cl, "largest") == {1, 2, 5, 6}
    assert survivors(cl, "largest", k2=2) == {1, 2}
    assert survivors([[0], [1], [2]], "largest", k2=1) == {0, 1, 2}   # all singletons: ordinary sampling
    assert survivors([[0, 1], [2, 3]], "largest") == {0, 1}           # equal sizes: the earliest
    assert survivors(cl, "representatives") == {0, 1, 4}


# ----- DeepConf: threshold and stop point on hand-built confidence traces -----------------------

def stored(confs, finish="length"):
    """A stored sample whose per-token confidences are `confs` (ids: printable bytes)."""
    n = len(confs)
    trace = {"ids": [65 + (t % 26) for t in range(n)], "logprob": [-0.1] * n, "entropy": [0.5] * n,
             "self_certainty": [1.0] * n, "confidence": list(confs)}
    return {"i": None, "text": "x", "finish": finish, "n_tokens": n, "trace": trace}


def record(traces, rid="p"):
    samples = []
    for i, t in enumerate(traces):
        s = stored(t)
        s["i"] = i
        samples.append(s)
    return {"id": rid, "samples": samples, "run": {"seed": 0}}


def by_hand_threshold(mins, keep):
    v = sorted(mins)
    pos = (1 - keep) * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def by_hand_stop(conf, thr, w):
    for t in range(w, len(conf) + 1):
        if sum(conf[t - w:t]) / w < thr:
            return t
    return None


def test_deepconf_threshold_and_stop_point_match_a_hand_computation(tiny):
    _, tok = tiny
    w, keep = 3, 0.5
    warm = [[5, 5, 4, 4, 4, 5], [6, 2, 2, 2, 6, 6], [3, 3, 3, 3, 3, 3]]
    # lowest window means of 3: 4.0, 2.0, 3.0 -> the median keeps half of them: threshold 3.0
    mins = [min(sum(c[t:t + w]) / w for t in range(len(c) - w + 1)) for c in warm]
    thr = by_hand_threshold(mins, keep)
    assert thr == 3.0
    late = [[4, 4, 4, 3, 3, 2, 2, 2, 5], [4, 4, 4, 4, 4, 4, 4, 4, 4], [2, 2]]
    rec = record(warm + late)
    ctl = build(settings("deepconf", warmup=3, keep=keep, window=w))
    out = next(replay([rec], tok, ctl, batch_size=8))
    for i, conf in enumerate(late, start=3):
        s = out["samples"][i]
        stop = by_hand_stop(conf, thr, w)
        if stop is None:
            assert s["finish"] == "length" and s["n_tokens"] == len(conf)
        else:
            assert s["finish"] == "low-confidence" and s["n_tokens"] == stop
    assert [s["finish"] for s in out["samples"][3:]] == ["low-confidence", "length", "length"]  # the short one: no full window
    assert out["prune"]["threshold"] == pytest.approx(thr)
    assert out["prune"]["tokens_saved"] == len(late[0]) - by_hand_stop(late[0], thr, w)


def test_deepconf_holds_later_samples_until_warmup_finished(tiny):
    _, tok = tiny
    from strategies.rows import Request, Row

    ctl = build(settings("deepconf", warmup=2, keep=0.9, window=2))
    ctl.bind(lambda r: "")
    req = Request(key=0, prompt_ids=[1], n=3)
    req.rows = [Row(req, i, None, 0, [], []) for i in range(3)]
    ctl.begin(req)
    assert [ctl.admit(r) for r in req.rows] == [START, START, WAIT]
    for r in req.rows[:2]:
        r.confidence = [1.0, 2.0]
        r.finish = "stop"
        ctl.finished(r)
    assert ctl.admit(req.rows[2]) == START


def test_consensus_skips_samples_not_started(tiny):
    _, tok = tiny
    # every sample answers 7: after the 2 warm-up samples the share is 1.0 >= 0.95
    ids = tok("The answer is 7.", add_special_tokens=False)["input_ids"]
    rec = record([[3.0] * len(ids)] * 6)
    for s in rec["samples"]:
        s["trace"]["ids"] = list(ids)
    ctl = build(settings("deepconf", warmup=2, keep=0.9, window=2, consensus=0.95))
    out = next(replay([rec], tok, ctl, batch_size=2))
    assert len(out["samples"]) == 2 and out["skipped"] == 4
    assert out["prune"]["tokens"] == 2 * len(ids) and out["prune"]["tokens_saved"] == 4 * len(ids)


# ----- the engine stops rows, frees and refills their slots; replay == online -------------------

@register
class LengthParity:
    """A test judge: prefixes whose character counts have the same parity are 'the same'."""
    name = "test-parity"

    def __init__(self, settings, loaded=None):
        pass

    def score(self, pairs):
        return [float(len(a) % 2 == len(b) % 2) for a, b in pairs]


ITEMS = [{"id": k, "prompt": p} for k, p in enumerate(["hello there", "what is 2+2", "tell me a story",
                                                        "name a colour"])]


def run(tiny, settings=None, trace=True, n=6, batch=5):
    from strategies.runner import GenerateOptions, generate
    from strategies.models import Loaded

    model, tok = tiny
    loaded = Loaded(model=model, tokenizer=tok, name="tiny-random", source="-", sha256=None)
    ctl = build(settings) if settings else None
    opts = GenerateOptions(n=n, max_new_tokens=20, batch_size=batch, trace=trace, seed=3)
    return list(generate(ITEMS, loaded, Discrete(DiscreteParams(1.0)), opts, controller=ctl)), ctl


SETTINGS = {
    "deepconf": settings("deepconf", warmup=3, keep=0.9, window=3),
    "deepprune": settings("deepprune", judge="test-parity", prefix="tokens:4", survivors="largest", k2=1),
    "deepprune-reps": settings("deepprune", judge="test-parity", prefix="tokens:4",
                                    survivors="representatives"),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_online_equals_replay_and_stopped_rows_stop_costing_steps(tiny, name):
    from strategies import engine as engine_mod

    full, _ = run(tiny)
    made = []
    real = engine_mod.Engine.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        made.append(self)

    engine_mod.Engine.__init__ = spy
    try:
        online, _ = run(tiny, SETTINGS[name])
    finally:
        engine_mod.Engine.__init__ = real
    eng = made[0]
    replayed = list(replay(full, tiny[1], build(SETTINGS[name]), batch_size=5))
    stopped = 0
    for on, rp, f in zip(online, replayed, full):
        assert [s["i"] for s in on["samples"]] == [s["i"] for s in rp["samples"]]
        for a, b, c in zip(on["samples"], rp["samples"], f["samples"]):
            assert c["trace"]["ids"][:a["n_tokens"]] == a["trace"]["ids"]   # the same sample, cut
            assert (a["finish"], a["n_tokens"], a.get("cluster"), a.get("cluster_size")) == \
                   (b["finish"], b["n_tokens"], b.get("cluster"), b.get("cluster_size"))
            stopped += a["finish"] in ("pruned", "low-confidence")
    assert stopped > 0
    # every decoded row-step is a recorded token: stopped rows cost nothing after their stop
    assert eng.tokens_generated == sum(s["n_tokens"] for r in online for s in r["samples"])
    assert eng.tokens_generated < sum(s["n_tokens"] for r in full for s in r["samples"])
    # freed slots are refilled at once: only the tail of the run has idle slots
    assert eng.steps <= -(-eng.tokens_generated // 5) + 20


def test_deepprune_fields_and_votes(tiny):
    online, _ = run(tiny, SETTINGS["deepprune-reps"])
    for rec in online:
        reps = [s for s in rec["samples"] if s["finish"] not in ("pruned",)]
        assert sum(s["cluster_size"] for s in reps) == len(rec["samples"])
        assert all("cluster" in s for s in rec["samples"])
        assert len(reps) == rec["prune"]["clusters"]


@register
class SameOpening:
    """A scripted judge: two prefixes are 'the same' when their first 4 characters are."""
    name = "test-opening"

    def __init__(self, settings, loaded=None):
        pass

    def score(self, pairs):
        return [float(a[:4] == b[:4]) for a, b in pairs]


def text_record(tok, texts):
    """A stored unpruned record whose samples are `texts` (one byte per token)."""
    rec = record([[1.0] * len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts])
    for s, t in zip(rec["samples"], texts):
        s["trace"]["ids"] = tok(t, add_special_tokens=False)["input_ids"]
        s["text"] = t
    return rec


# samples 0, 2, 3, 5 open with "aaaa", samples 1 and 4 with "bbbb"
MIXED = ["aaaa so the answer is 3", "bbbb then 5", "aaaa thus 3 it is", "aaaa 3", "bbbb the answer is 5!", "aaaa so 3"]


def prune_texts(tok, texts, **options):
    ctl = build(settings("deepprune", judge="test-opening", prefix="tokens:4", **options))
    return next(replay([text_record(tok, texts)], tok, ctl, batch_size=len(texts)))


def test_default_survivors_are_the_papers_largest_cluster(tiny):
    """The paper's rule, counted by hand: clusters {0, 2, 3, 5} and {1, 4}; the largest finishes
    and votes, the other stops once every prefix (4 tokens) is in."""
    _, tok = tiny
    out = prune_texts(tok, MIXED)
    finished = {s["i"] for s in out["samples"] if s["finish"] != "pruned"}
    assert finished == {0, 2, 3, 5}
    full = [len(t) for t in MIXED]
    for s in out["samples"]:
        assert s["n_tokens"] == (full[s["i"]] if s["i"] in finished else 4)
    assert out["prune"]["tokens_saved"] == (full[1] - 4) + (full[4] - 4)
    # our other setting: one trace per cluster, the first of each
    reps = prune_texts(tok, MIXED, survivors="representatives")
    assert {s["i"] for s in reps["samples"] if s["finish"] != "pruned"} == {0, 1}


def test_a_redundant_pool_keeps_k2_traces(tiny):
    """Every trace opens alike: one cluster. The paper's rule finishes k* = min(|c_max|, K2) of it
    (the first ones; K2 = 20 by default), so a pool larger than K2 saves the rest."""
    _, tok = tiny
    pool = [f"aaaa {'so ' * (i % 3)}the answer is 3" for i in range(23)]
    full = [len(t) for t in pool]
    out = prune_texts(tok, pool)
    assert [s["finish"] != "pruned" for s in out["samples"]] == [True] * 20 + [False] * 3
    assert out["prune"]["tokens_saved"] == sum(n - 4 for n in full[20:])
    small = pool[:5]
    two = prune_texts(tok, small, k2=2)
    assert [s["finish"] != "pruned" for s in two["samples"]] == [True, True, False, False, False]
    assert two["prune"]["tokens_saved"] == sum(n - 4 for n in full[2:5])
    everything = prune_texts(tok, pool, k2=0)                       # --k2 0: all of the cluster
    assert all(s["finish"] != "pruned" for s in everything["samples"]) and everything["prune"]["tokens_saved"] == 0


def test_classifier_runs_record_the_judge_input():
    from strategies.pruners.deepprune import DeepPrune

    def recorded(**kw):
        return DeepPrune(None, settings("deepprune", judge="classifier", judge_model="ckpt", **kw)).run_fields()["prune"]

    assert recorded()["judge_template"] is None                  # null: the tokenizer's text pair
    assert recorded(judge_template="1: {a} 2: {b}")["judge_template"] == "1: {a} 2: {b}"
    assert "judge_template" not in DeepPrune(None, settings("deepprune")).run_fields()["prune"]


# ----- aggregation and evaluation -------------------------------------------------------------

def test_aggregators_ignore_stopped_samples_and_eval_counts_their_tokens():
    samples = [{"i": 0, "text": "The answer is 3", "finish": "stop", "n_tokens": 10, "mean_logprob": -1},
               {"i": 1, "text": "The answer is 5", "finish": "pruned", "n_tokens": 4, "mean_logprob": -1},
               {"i": 2, "text": "The answer is 5", "finish": "low-confidence", "n_tokens": 6, "mean_logprob": -1},
               {"i": 3, "text": "The answer is 5", "finish": "consensus", "n_tokens": 2, "mean_logprob": -1}]
    pool = build_pool(samples)
    assert pool.size == 1 and pool.n_tokens == 22
    rec = next(aggregate_records([{"samples": samples}], parse_methods(["majority"])))
    assert rec["aggregates"]["majority"]["answer"] == "3"
    assert "pred" not in rec["samples"][1]
    assert build_pool(samples, include_stopped=True).size == 4


def test_representatives_vote_with_their_cluster_size():
    samples = [{"i": 0, "text": "The answer is 3", "finish": "stop", "n_tokens": 5, "cluster": 0, "cluster_size": 1},
               {"i": 1, "text": "The answer is 5", "finish": "stop", "n_tokens": 5, "cluster": 1, "cluster_size": 3},
               {"i": 2, "text": "The answer is 3", "finish": "stop", "n_tokens": 5, "cluster": 2, "cluster_size": 1}]
    rec = next(aggregate_records([{"samples": samples}], parse_methods(["majority"])))
    assert rec["aggregates"]["majority"]["answer"] == "5"  # 3 votes against 2


def test_eval_tokens_column_counts_pruned_tokens():
    from strategies.evaluation.core import load_problems, summarize

    recs = [{"answer": "3", "samples": [
        {"i": 0, "text": "The answer is 3", "finish": "stop", "n_tokens": 10},
        {"i": 1, "text": "The answer is 4", "finish": "pruned", "n_tokens": 7}]}]
    problems, _ = load_problems(recs)
    s = summarize(problems, parse_methods(["majority"]))
    assert s["tokens"] == 17 and s["methods"]["majority"]["accuracy"] == 1.0


# ----- the judge metric -----------------------------------------------------------------------

def test_auroc_and_tnr_against_counting_by_hand():
    scores = [0.9, 0.8, 0.4, 0.5, 0.3]
    labels = [True, True, True, False, False]
    # positive > negative in 5 of 6 pairs (0.4 < 0.5)
    assert auroc(scores, labels) == pytest.approx(5 / 6)
    # FNR <= 0.2 with 3 positives keeps all three: t = 0.4; negatives below 0.4: {0.3}
    assert tnr_at_fnr(scores, labels, 0.2) == pytest.approx(0.5)
    assert auroc([0.5, 0.5], [True, False]) == 0.5


def test_prefix_words_cut_at_the_kth_reasoning_word():
    p = Prefix.parse("words:2")
    assert p.cut("First add. So 3 and then 4. Thus 7") == "First add. So"
    assert p.cut("Some soap so") is None  # 'so' at the very end may still grow into a longer word
    assert Prefix.parse("tokens:7").kind == "tokens"


# ----- CLI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--prune", "deepprune", "--judge", "oracle"], "unknown judge"),
    (["--prune", "deepprune", "--prefix", "lines:3"], "--prefix"),
    (["--prune", "deepprune", "--prefix", "words:x"], "--prefix"),
    (["--prune", "deepconf", "--keep", "0"], "--keep"),
    (["--prune", "deepconf", "--keep", "1.5"], "--keep"),
    (["--prune", "deepconf", "--window", "0"], "--window"),
    (["--prune", "magic"], "unknown pruning method"),
])
def test_bad_pruning_options_are_one_line_errors(args, message):
    res = tts("generate", "-", "--model", "tiny-random", *args, input='{"prompt": "hi"}\n')
    assert res.code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_cli_generate_prune_and_replay(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 1, "prompt": "hello"}\n{"id": 2, "prompt": "count to ten"}\n')
    # float32: the online and replayed runs batch rows differently; only in float32 does that
    # never move a token (docs/generators.md, "Randomness")
    common = ["--model", "tiny-random", "-n", "5", "--max-new-tokens", "12", "--seed", "2", "--batch-size", "6",
              "--quiet", "--dtype", "float32"]
    full = tts("generate", prompts, *common, "--trace")
    assert full.code == 0
    (tmp_path / "full.jsonl").write_text(full.stdout)
    opts = ["--warmup", "2", "--keep", "0.9", "--window", "2"]
    online = tts("generate", prompts, *common, "--trace", "--prune", "deepconf", *opts)
    rp = tts("prune", tmp_path / "full.jsonl", "--method", "deepconf", *opts)
    assert online.code == 0 and rp.code == 0, rp.stderr
    key = [[(s["finish"], s["n_tokens"]) for s in r["samples"]] for r in online.records()]
    assert key == [[(s["finish"], s["n_tokens"]) for s in r["samples"]] for r in rp.records()]
    assert online.records()[0]["run"]["prune"]["method"] == "deepconf"
    # without traces: a one-line error
    plain = tts("generate", prompts, *common)
    (tmp_path / "plain.jsonl").write_text(plain.stdout)
    bad = tts("prune", tmp_path / "plain.jsonl", "--method", "deepconf")
    assert bad.code == 2 and "--trace" in bad.stderr
    auc = tts("prune", tmp_path / "full.jsonl", "--judge-auroc", "--judge", "ngram", "--prefix", "tokens:4")
    assert auc.code == 0 and auc.records()[0]["judge"] == "ngram"



def test_deepprune_runs_write_the_same_bytes_twice_and_time_the_judge_on_stderr(tmp_path):
    """A wall-clock time in a record would make the same command's output differ run to run."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 1, "prompt": "hello"}\n{"id": 2, "prompt": "count to ten"}\n')
    common = ["--model", "tiny-random", "-n", "4", "--max-new-tokens", "10", "--seed", "1", "--quiet",
              "--dtype", "float32"]
    dp = ["--judge", "ngram", "--prefix", "tokens:3", "--tau", "0.0"]
    full = tts("generate", prompts, *common, "--trace")
    (tmp_path / "full.jsonl").write_text(full.stdout)
    for args in (["generate", prompts, *common, "--trace", "--prune", "deepprune", *dp],
                 ["prune", tmp_path / "full.jsonl", "--method", "deepprune", *dp]):
        first, again = tts(*args), tts(*args)
        assert first.code == 0 and again.code == 0, first.stderr
        assert first.stdout == again.stdout
        assert all("clusters" in r["prune"] for r in first.records())
        last = first.stderr.strip().splitlines()[-1]
        assert re.search(r"; judge [0-9.]+ s over 2 prompts$", last), last

# ----- model judges ---------------------------------------------------------------------------

def test_embedding_judge_loads_offline_and_ranks_paraphrases_above_unrelated_text():
    from strategies.pruners.judges import make_judge

    j = make_judge(settings("deepprune", judge="embedding"))
    a = "First, 3 apples plus 4 apples make 7 apples."
    s = j.score([(a, a), (a, "First, 4 apples and 3 apples give 7 apples."),
                 (a, "The weather in Paris was rainy all week.")])
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[1] > s[2] and -1 <= s[2] <= 1


def test_llm_judge_is_p_yes_over_yes_and_no_computed_unpadded(tiny):
    import torch

    from strategies.pruners.judges.llm import LLMJudge
    from strategies.models import Loaded

    model, tok = tiny
    j = LLMJudge(settings("deepprune", judge="llm"), Loaded(model, tok, "tiny", "-", None))
    pairs = [("so 3 and 4", "so 7"), ("a much longer first prefix, thus", "b")]
    got = j.score(pairs)
    for (a, b), g in zip(pairs, got):
        ids = torch.tensor([j.prompt(a, b)])
        with torch.no_grad():
            p = torch.softmax(model(ids).logits[0, -1].double(), -1)
        yes, no = p[j.yes].sum(), p[j.no].sum()
        assert g == pytest.approx(float(yes / (yes + no)), abs=1e-4)


def test_classifier_judge_scores_pairs_like_an_unbatched_forward(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from strategies.pruners.judges import make_judge
    from strategies.tiny import byte_tokenizer

    tok = byte_tokenizer()
    config = AutoConfig.for_model("llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                  num_labels=2, id2label={0: "different", 1: "same"},
                                  label2id={"different": 0, "same": 1}, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    pairs = [("so 3 and 4", "so 7"), ("thus a longer one here", "b")]
    for labels, col in (("same", 1), ("0", 0)):
        j = make_judge(settings("deepprune", judge="classifier", judge_model=str(tmp_path), judge_labels=labels))
        got = j.score(pairs)
        for (a, b), g in zip(pairs, got):
            enc = tok(a, b, return_tensors="pt")
            with torch.no_grad():
                p = torch.softmax(model(**enc).logits[0].double(), -1)
            assert g == pytest.approx(float(p[col]), abs=1e-4)
    with pytest.raises(ValueError, match="--judge-labels"):
        make_judge(settings("deepprune", judge="classifier", judge_model=str(tmp_path), judge_labels="maybe"))
    # --judge-template: one text, the prefixes put where {a} and {b} stand (braces in them kept)
    template = "Trace 1: {a}\nTrace 2: {b}\nSame answer?"
    pairs = [("so {3} and 4", "so 7"), ("thus a longer one here", "b")]
    j = make_judge(settings("deepprune", judge="classifier", judge_model=str(tmp_path), judge_template=template))
    for (a, b), g in zip(pairs, j.score(pairs)):
        enc = tok(f"Trace 1: {a}\nTrace 2: {b}\nSame answer?", return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(model(**enc).logits[0].double(), -1)
        assert g == pytest.approx(float(p[1]), abs=1e-4)
    with pytest.raises(ValueError, match="--judge-template"):
        settings("deepprune", judge="classifier", judge_model=str(tmp_path), judge_template="no slots")


# ----- fidelity to the papers' reference behaviour --------------------------------------------

def answer_sample(tok, text, conf_value, i):
    """A stored sample that reads `text` (byte ids) with a constant confidence."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    s = stored([conf_value] * len(ids), finish="stop")
    s.update(i=i, text=text)
    s["trace"]["ids"] = list(ids)
    return s


def test_deepconf_warmup_below_threshold_is_marked_and_does_not_vote(tiny):
    _, tok = tiny
    # warm-up: three traces answer 1 with low confidence, two answer 2 with high confidence;
    # keep 0.5 -> threshold = median of the five minima, so the low three fall below it
    confs = [1.0, 1.5, 2.0, 5.0, 6.0]
    texts = ["The answer is 1."] * 3 + ["The answer is 2."] * 2
    warm = [answer_sample(tok, t, c, i) for i, (t, c) in enumerate(zip(texts, confs))]
    late = answer_sample(tok, "The answer is 3.", 9.0, 5)
    rec = {"id": "p", "samples": warm + [late], "run": {"seed": 0}}
    thr = by_hand_threshold(confs, 0.5)
    assert thr == 2.0
    out = next(replay([rec], tok, build(settings("deepconf", warmup=5, keep=0.5, window=2)), batch_size=8))
    marked = [bool(s.get("below_threshold")) for s in out["samples"]]
    assert marked == [c < thr for c in confs] + [False]
    assert [s["finish"] for s in out["samples"]] == ["stop"] * 6 and out["samples"][0]["text"] == texts[0]
    # majority without the marked samples: 2 (two votes) against 3 (one); with them 1 would win
    agg = next(aggregate_records([out], parse_methods(["majority"])))
    assert agg["aggregates"]["majority"]["answer"] == "2"
    kept = next(replay([rec], tok, build(settings("deepconf", warmup=5, keep=0.5, window=2,
                                                  warmup_vote="all")), batch_size=8))
    assert not any("below_threshold" in s for s in kept["samples"])
    assert next(aggregate_records([kept], parse_methods(["majority"])))["aggregates"]["majority"]["answer"] == "1"


def test_deepconf_consensus_groups_equivalent_answers(tiny):
    _, tok = tiny
    # 0.5 and \frac{1}{2} are one answer (verifiers.equivalent): share 1.0 after the warm-up
    assert equivalent("0.5", r"\frac{1}{2}")
    texts = ["The answer is 0.5.", r"The answer is \frac{1}{2}."] + ["The answer is 0.5."] * 4
    rec = {"id": "p", "samples": [answer_sample(tok, t, 3.0, i) for i, t in enumerate(texts)], "run": {"seed": 0}}
    ctl = build(settings("deepconf", warmup=2, keep=0.9, window=2, consensus=0.95))
    out = next(replay([rec], tok, ctl, batch_size=2))
    assert len(out["samples"]) == 2 and out["skipped"] == 4


def test_representatives_stop_a_redundant_pool_but_its_first_trace(tiny):
    _, tok = tiny
    # eight traces that say the same thing: one cluster; --survivors representatives lets its first
    # member finish and stops every trace that joined it (lockstep batch: all stop at the 4-token prefix)
    text = "First add 3 and 4, so the answer is 7."
    n, k = 8, 4
    rec = {"id": "p", "samples": [answer_sample(tok, text, 3.0, i) for i in range(n)], "run": {"seed": 0}}
    full = n * len(tok(text, add_special_tokens=False)["input_ids"])
    out = next(replay([rec], tok, build(settings("deepprune", prefix=f"tokens:{k}", survivors="representatives")),
                      batch_size=n))
    length = full // n
    assert [s["finish"] for s in out["samples"]] == ["stop"] + ["pruned"] * (n - 1)
    assert out["prune"]["tokens"] == length + (n - 1) * k
    assert out["prune"]["tokens_saved"] == (n - 1) * (length - k)
    assert out["samples"][0]["cluster_size"] == n


def test_embedding_judge_scores_the_plain_cosine():
    import torch
    from transformers import AutoModel, AutoTokenizer

    from strategies.pruners.judges import make_judge
    from strategies.pruners.judges.embedding import model_dir

    a, b = "First, 3 apples plus 4 apples make 7 apples.", "The weather in Paris was rainy all week."
    tok = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(model_dir(), local_files_only=True).eval()
    vecs = []
    for t in (a, b):  # one text at a time: no padding, so the mean is over every token
        with torch.no_grad():
            h = model(**tok(t, return_tensors="pt")).last_hidden_state[0].double().numpy()
        vecs.append(h.mean(0))
    cos = float(vecs[0] @ vecs[1] / np.linalg.norm(vecs[0]) / np.linalg.norm(vecs[1]))
    got = make_judge(settings("deepprune", judge="embedding")).score([(a, b)])[0]
    assert got == pytest.approx(cos, abs=1e-4)


# ----- options: declared by each pruner, refused where they do not apply ----------------------

def test_every_declared_option_is_a_flag_of_both_commands():
    import inspect

    from strategies.pruners import METHODS
    from tts_cli.commands.generate import generate
    from tts_cli.commands.prune import prune

    for command in (generate, prune):
        params = inspect.signature(command).parameters
        for cls in METHODS.values():
            for key, opt in cls.options.items():
                assert key in params and "--" + key.replace("_", "-") in params[key].default.param_decls


@pytest.mark.parametrize("args, message", [
    (["--keep", "0.5"], "--keep applies to --prune deepconf only"),
    (["--window", "8"], "--window applies to --prune deepconf only"),
    (["--prune", "deepconf", "--tau", "0.3"], "--tau applies to deepprune only, not deepconf"),
    (["--prune", "deepprune", "--warmup", "2"], "--warmup applies to deepconf only, not deepprune"),
    (["--prune", "deepprune", "--survivors", "all"], "--survivors"),
])
def test_options_of_a_pruner_not_selected_are_refused(args, message):
    res = tts("generate", "-", "--model", "tiny-random", *args, input='{"prompt": "hi"}\n')
    assert res.code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_prune_refuses_an_option_of_the_other_method_and_warns_when_nothing_can_stop(tmp_path, tiny):
    run = tmp_path / "run.jsonl"
    run.write_text('{"id": 1, "samples": [], "run": {"model": "tiny-random"}}\n')
    res = tts("prune", run, "--method", "deepconf", "--tau", "0.3")
    assert res.code == 2 and "--tau applies to deepprune only" in res.stderr
    import orjson

    rec = record([[3.0, 3.0, 3.0]] * 3)
    rec["run"]["model"] = "tiny-random"
    run.write_bytes(orjson.dumps(rec) + b"\n")
    few = tts("prune", run, "--method", "deepconf", "--warmup", "3", "--window", "2")
    assert few.code == 0 and "at most 3 <= --warmup 3" in few.stderr
    assert few.stderr.strip().splitlines()[-1] == "tts prune: 9 of 9 tokens (0.0% saved)"


def test_deepconf_warmup_covering_every_sample_warns_and_runs_end_with_a_summary():
    args = ["--model", "tiny-random", "--max-new-tokens", "6", "--quiet", "--prune", "deepconf", "--warmup", "4"]
    few = tts("generate", "-", *args, "-n", "4", input='{"prompt": "hi"}\n')
    assert few.code == 0 and "-n 4 <= --warmup 4" in few.stderr
    many = tts("generate", "-", *args, "-n", "6", "--window", "2", input='{"prompt": "hi"}\n')
    assert many.code == 0 and "warning" not in many.stderr
    rec = many.records()[0]
    used = sum(s["n_tokens"] for s in rec["samples"])
    stopped = sum(s["finish"] in ("pruned", "low-confidence", "consensus") for s in rec["samples"])
    assert many.stderr.strip().splitlines()[-1] == \
        f"tts generate: {used} tokens generated; {stopped} of 6 samples stopped, 0 never started"

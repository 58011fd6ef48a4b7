"""Cost accounting: the parameter count against the architecture's formula, the records' `cost`
against counts made here (prompt once per request, judge and assistant tokens), cost sums of
hand-built records against arithmetic done by hand, and the Pareto frontier against brute force."""
import itertools

import numpy as np
import pytest

from strategies.evaluation.compute import (
    CostError, non_embedding_params, pareto, params_from_config, record_cost, require, total,
)
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.models import Loaded
from strategies.pruners import build, settings
from strategies.pruners.judges import register
from strategies.runner import GenerateOptions, generate


def llama_formula(c) -> int:
    """Non-embedding parameters of a Llama without biases, from the paper's layer shapes."""
    d, hd = c.hidden_size, c.head_dim
    attn = d * c.num_attention_heads * hd * 2 + 2 * d * c.num_key_value_heads * hd   # q, o; k, v
    mlp = 3 * d * c.intermediate_size                                                 # gate, up, down
    return c.num_hidden_layers * (attn + mlp + 2 * d) + d                            # + RMSNorms


def test_params_from_config_match_the_llama_formula_and_the_live_model(tiny):
    model, _ = tiny
    assert params_from_config(model.config) == llama_formula(model.config)
    # the live model less its (tied) embedding table
    total_params = sum(p.numel() for p in model.parameters())
    assert non_embedding_params(model) == total_params - model.config.vocab_size * model.config.hidden_size


PROMPTS = [{"id": 0, "prompt": "hello there"}, {"id": 1, "prompt": "what is 2+2, and why?"}]


def _loaded(tiny):
    model, tok = tiny
    return Loaded(model=model, tokenizer=tok, name="tiny-random", source="-", sha256=None)


def test_generate_records_the_prompt_once_per_prompt_and_the_generator_size(tiny):
    model, tok = tiny
    recs = list(generate(PROMPTS, _loaded(tiny), Discrete(DiscreteParams(1.0)), GenerateOptions(n=5, max_new_tokens=6)))
    for obj, rec in zip(PROMPTS, recs):
        text = tok.apply_chat_template([{"role": "user", "content": obj["prompt"]}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert rec["cost"] == {"prompt_tokens": len(ids), "params": llama_formula(model.config)}


@register
class CountingJudge:
    """A test judge with a model's bookkeeping: it 'reads' len(a) + len(b) tokens per pair."""
    name = "test-counting"
    pairs: list = []

    def __init__(self, settings, loaded=None):
        self.model_name, self.params, self.tokens = "counting", 1000, 0
        self.pairs = []

    def score(self, pairs):
        self.pairs.append(list(pairs))
        self.tokens += sum(len(a) + len(b) for a, b in pairs)
        return [float(len(a) % 2 == len(b) % 2) for a, b in pairs]


def test_deepprune_records_what_its_judge_read(tiny):
    ctl = build(settings("deepprune", judge="test-counting", prefix="tokens:3"))
    recs = list(generate(PROMPTS, _loaded(tiny), Discrete(DiscreteParams(1.0)),
                         GenerateOptions(n=6, max_new_tokens=10, seed=2), controller=ctl))
    judged = sum(len(a) + len(b) for call in ctl.judge.pairs for a, b in call)
    got = [rec["cost"]["other"] for rec in recs]
    assert all(len(o) == 1 and o[0]["role"] == "judge" and o[0]["params"] == 1000 and o[0]["tokens"] > 0
               for o in got)
    assert sum(o[0]["tokens"] for o in got) == judged


def test_softcot_records_its_assistant_pass_and_every_chain_prompt(tiny):
    import torch

    from strategies.generators.params import SoftCoTParams
    from strategies.generators.softcot import SoftCoT
    from strategies.softcot.projection import Projection
    from strategies.softcot.thoughts import INSTRUCTION, MARK

    loaded = _loaded(tiny)
    model, tok = tiny
    d = model.config.hidden_size
    proj = Projection(d, d, 0).requires_grad_(False)
    with torch.no_grad():
        proj.linear.weight.copy_(torch.eye(d) * 0.01)
        proj.linear.bias.zero_()
    gen = SoftCoT(SoftCoTParams(sampling=DiscreteParams(1.0), thoughts=2, perturb="init-tokens", per_chain=2),
                  model, tok, proj, assistant_name="tiny")
    obj = {"id": 1, "prompt": "Tom has 3 apples and buys 4 more."}
    rec = next(generate([obj], loaded, gen, GenerateOptions(n=6, max_new_tokens=4)))
    # the assistant reads its prompt cut after the 2 placeholders, once per chain's init vector
    text = tok.apply_chat_template([{"role": "user", "content": INSTRUCTION + "\n\n" + obj["prompt"] + "\n\n" + MARK}],
                                   tokenize=False)
    head = tok(text.split(MARK)[0], add_special_tokens=False)["input_ids"]
    (other,) = rec["cost"]["other"]
    assert other == {"role": "assistant", "model": "tiny", "params": llama_formula(model.config),
                     "tokens": 3 * (len(head) + 2)}
    # three chains: three prefills of the same base prompt (the question and 2 placeholders)
    plain = tok.apply_chat_template([{"role": "user", "content": obj["prompt"]}], add_generation_prompt=True,
                                    tokenize=False)
    assert rec["cost"]["prompt_tokens"] % 3 == 0
    assert rec["cost"]["prompt_tokens"] // 3 >= len(tok(plain, add_special_tokens=False)["input_ids"]) + 2


# ----- sums over hand-built records -----------------------------------------------------------

def _rec(n_tokens, finishes=None, cost=None, skipped=0):
    finishes = finishes or ["stop"] * len(n_tokens)
    rec = {"samples": [{"i": i, "n_tokens": n, "finish": f} for i, (n, f) in enumerate(zip(n_tokens, finishes))]}
    if cost is not None:
        rec["cost"] = cost
    if skipped:
        rec["skipped"] = skipped
    return rec


def test_cost_sums_count_stopped_traces_shared_prompts_and_judges():
    recs = [
        # 3 samples, one pruned after 4 tokens: 10 + 4 + 7 = 21 generated, prompt 30 once
        _rec([10, 4, 7], ["stop", "pruned", "length"],
             {"prompt_tokens": 30, "params": 100, "other": [{"role": "judge", "model": "j", "params": 50, "tokens": 40}]}),
        # 2 samples started, 2 never (consensus): 5 + 6 = 11 generated, prompt 20
        _rec([5, 6], ["stop", "consensus"], {"prompt_tokens": 20, "params": 100}, skipped=2),
    ]
    costs = [record_cost(r) for r in recs]
    assert [c.generated for c in costs] == [21, 11]
    assert [c.per_sample.tolist() for c in costs] == [[10, 7], [5]]   # what votes
    assert total(costs, "tokens") == (21 + 11) / 2
    # 2·N·(prompt + generated) per record, plus 2·N_judge·tokens_judge
    want = ((2 * 100 * (30 + 21) + 2 * 50 * 40) + 2 * 100 * (20 + 11)) / 2
    assert total(costs, "flops") == pytest.approx(want)
    assert total(costs, "samples") == (3 + 2) / 2


def test_older_records_refuse_the_flops_axis_naming_the_field():
    old = [record_cost(_rec([3, 4]))]
    require(old, "tokens", "a.jsonl")          # n_tokens is enough for tokens
    with pytest.raises(CostError, match=r"a\.jsonl problem 1 has no `cost`"):
        require(old, "flops", "a.jsonl")
    half = [record_cost(_rec([3], cost={"prompt_tokens": 5}))]
    with pytest.raises(CostError, match=r"`cost\.params`"):
        require(half, "flops", "b.jsonl")
    no_tokens = [record_cost({"samples": [{"i": 0, "finish": "stop"}]})]
    with pytest.raises(CostError, match=r"`samples\[\]\.n_tokens`"):
        require(no_tokens, "tokens", "c.jsonl")


# ----- the Pareto frontier --------------------------------------------------------------------

def brute_frontier(cost, acc):
    keep = []
    for i in range(len(cost)):
        dominated = any(cost[j] <= cost[i] and acc[j] >= acc[i] and (cost[j] < cost[i] or acc[j] > acc[i])
                        for j in range(len(cost)))
        if not dominated:
            keep.append(i)
    return sorted(keep)


@pytest.mark.parametrize("seed", range(30))
def test_pareto_frontier_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    # small integer grids make ties in cost, in accuracy and whole duplicate points common
    cost = rng.integers(1, 6, n).astype(float)
    acc = rng.integers(0, 5, n) / 4
    assert sorted(pareto(cost, acc).tolist()) == brute_frontier(cost, acc)


def test_pareto_orders_by_cost():
    idx = pareto([4.0, 1.0, 2.0, 3.0], [0.9, 0.1, 0.5, 0.4])
    assert idx.tolist() == [1, 2, 0]


def test_llm_judge_counts_the_unpadded_prompt_tokens_it_reads(tiny):
    from strategies.pruners.judges.llm import QUESTION, LLMJudge

    model, tok = tiny
    j = LLMJudge(settings("deepprune", judge="llm"), Loaded(model, tok, "tiny", "-", None))
    pairs = [("so 3 and 4", "so 7"), ("a much longer first prefix, thus", "b")] * 5   # two batches of 8
    j.score(pairs)
    want = 0
    for a, b in pairs:
        text = tok.apply_chat_template([{"role": "user", "content": QUESTION.format(a=a, b=b)}],
                                       add_generation_prompt=True, tokenize=False)
        want += len(tok(text, add_special_tokens=False)["input_ids"])
    assert j.tokens == want
    assert j.params == llama_formula(model.config)


def test_embedding_judge_counts_each_distinct_prefix_once():
    from strategies.pruners.judges import make_judge

    j = make_judge(settings("deepprune", judge="embedding"))
    pairs = [("the sum is 7", "so the total is 7"), ("the sum is 7", "it rains")]
    j.score(pairs)
    texts = ["the sum is 7", "so the total is 7", "it rains"]
    assert j.tokens == sum(len(j.tok(t)["input_ids"]) for t in texts)
    total_params = sum(p.numel() for p in j.model.parameters())
    emb = sum(p.numel() for n, p in j.model.named_parameters() if "embeddings" in n and "LayerNorm" not in n)
    assert j.params == total_params - emb


@pytest.mark.integration
def test_embedded_model_size_from_its_config():
    from strategies.models import load_meta

    config = load_meta("smollm2-135m", "cpu", "float32").config
    assert params_from_config(config) == llama_formula(config) == 106_203_456

"""`tts score` and verifiers.rm on tiny random reward models of each format, built and saved here,
against a plain unbatched forward pass of the same model with the input written out by hand
(each format's published convention), and the JSONL plumbing: pass-through, notes, errors, resume."""
import json

import pytest
import torch

from tests.cli import tts

PROMPTS = ["What is 2 + 3?", "Tom has 7 apples and eats 2. How many are left?"]
TEXTS = [
    ["First add.\n\n2 + 3 = 5.\n\nThe answer is 5.", "It is 6.", "Step one.\n\n\n\nStep two, after a gap."],
    ["7 - 2 = 5.\n\nSo 5 apples.", "", "Eat two: 5 left."],
]


def _tokenizer(extra=()):
    from strategies.tiny import byte_tokenizer

    tok = byte_tokenizer()
    if extra:
        tok.add_tokens(list(extra), special_tokens=True)
    return tok


def _config(cls_name, tok, **kw):
    from transformers import AutoConfig

    arch = "qwen2" if cls_name.startswith("Qwen2") else "llama"
    return AutoConfig.for_model(arch, vocab_size=len(tok) + 5, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                max_position_embeddings=256, pad_token_id=tok.pad_token_id, initializer_range=0.3,
                                **kw)


def _save(tmp_path, name, cls_name, tok, **kw):
    import transformers

    torch.manual_seed(len(name))
    model = getattr(transformers, cls_name)(_config(cls_name, tok, **kw)).eval()
    path = tmp_path / name
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    return {
        "orm": _save(tmp, "orm", "LlamaForSequenceClassification", _tokenizer(), num_labels=1),
        "orm2": _save(tmp, "orm2", "LlamaForSequenceClassification", _tokenizer(), num_labels=2),
        "tag": _save(tmp, "tag", "LlamaForCausalLM", _tokenizer(["ки"])),
        "token": _save(tmp, "token", "Qwen2ForTokenClassification", _tokenizer(["<extra_0>"]), num_labels=2),
    }


def records():
    return [{"id": r, "prompt": p, "answer": "5", "run": {"model": "x"},
             "samples": [{"i": i, "text": t, "n_tokens": 3, "extra": [r, i]} for i, t in enumerate(TEXTS[r])]}
            for r, p in enumerate(PROMPTS)]


def jsonl(recs):
    return "".join(json.dumps(x) + "\n" for x in recs)


def steps(text):
    return [p.strip() for p in text.split("\n\n") if p.strip()]


# --- the independent computations: one sequence at a time, full logits, ids found by value ------

def chat_ids(tok, prompt, response):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                   tokenize=False)
    return tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def ref_orm(model, tok, prompt, text, label=None):
    with torch.no_grad():
        logits = model(chat_ids(tok, prompt, text)).logits[0]
    return logits[0].item() if label is None else logits.softmax(-1)[label].item()


def ref_tag(model, tok, prompt, text):
    ids = tok(prompt + " " + "\n\n".join(s + " ки" for s in steps(text)), return_tensors="pt")["input_ids"]
    tag = tok.convert_tokens_to_ids("ки")
    good, bad = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    with torch.no_grad():
        logits = model(ids).logits[0]
    return logits[ids[0] == tag][:, [good, bad]].softmax(-1)[:, 0].tolist()


def ref_token(model, tok, prompt, text):
    ids = chat_ids(tok, prompt, "".join(s + "<extra_0>" for s in steps(text)))
    with torch.no_grad():
        probs = model(ids).logits[0].softmax(-1)
    return probs[ids[0] == tok.convert_tokens_to_ids("<extra_0>")][:, 1].tolist()


def reduced(scores, how):
    import math
    return {"last": scores[-1], "min": min(scores), "prod": math.prod(scores), "mean": sum(scores) / len(scores)}[how]


def score(path, *args, recs=None, device="cpu"):
    r = tts("score", "-", "--rm", path, "--batch-size", 2, "--quiet", "--device", device, *args,
            input=jsonl(recs or records()))
    assert r.code == 0, r.stderr
    return r


# --- formats -----------------------------------------------------------------------------------

def test_orm_logit_against_a_plain_forward(models):
    path, model = models["orm"]
    r = score(path)
    tok = _tokenizer()
    for rec, prompt, texts in zip(r.records(), PROMPTS, TEXTS):
        assert rec["score"]["format"] == "orm" and rec["score"]["kind"] == "orm" and rec["score"]["output"] == "logit"
        for s, text in zip(rec["samples"], texts):
            if not text:
                assert "reward" not in s
                continue
            assert s["reward"] == pytest.approx(ref_orm(model, tok, prompt, text), rel=1e-4, abs=1e-5)
            assert "step_rewards" not in s


@pytest.mark.parametrize("label,index", [(None, 1), ("0", 0), ("LABEL_1", 1)])
def test_orm_label_probability(models, label, index):
    path, model = models["orm2"]
    r = score(path, *(["--label", label] if label else []))
    tok = _tokenizer()
    s = r.records()[1]["samples"][2]
    assert s["reward"] == pytest.approx(ref_orm(model, tok, PROMPTS[1], TEXTS[1][2], index), rel=1e-4)
    assert r.records()[0]["score"]["label"] == index


@pytest.mark.parametrize("how", ["last", "min", "prod", "mean"])
def test_step_tag_prm_against_a_plain_forward(models, how):
    path, model = models["tag"]
    r = score(path, "--kind", "prm", "--reduce", how)
    tok = _tokenizer(["ки"])
    for rec, prompt, texts in zip(r.records(), PROMPTS, TEXTS):
        assert rec["score"]["format"] == "prm-tag" and rec["score"]["reduce"] == how
        assert rec["score"]["step_sep"] == "\n\n"
        for s, text in zip(rec["samples"], texts):
            if not text:
                continue
            want = ref_tag(model, tok, prompt, text)
            assert len(s["step_rewards"]) == len(steps(text))
            assert s["step_rewards"] == pytest.approx(want, rel=1e-4)
            assert s["reward"] == pytest.approx(reduced(want, how), rel=1e-4)
        # the reward model's share of the record's cost: the tokens of every scored sample's input
        # (as the plain forward above reads it) and the model's parameters less its embeddings
        read = sum(len(tok(prompt + " " + "\n\n".join(x + " ки" for x in steps(t)))["input_ids"])
                   for t in texts if t)
        embed = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
        head = model.get_output_embeddings().weight.numel()
        (other,) = rec["cost"]["other"]
        assert other == {"role": "reward", "model": f"rm:{path}", "tokens": read,
                         "params": sum(p.numel() for p in model.parameters()) - embed - head}


def test_token_class_prm_against_a_plain_forward(models):
    path, model = models["token"]
    r = score(path)
    tok = _tokenizer(["<extra_0>"])
    for rec, prompt, texts in zip(r.records(), PROMPTS, TEXTS):
        assert rec["score"]["format"] == "prm-token" and rec["score"]["reduce"] == "last"
        for s, text in zip(rec["samples"], texts):
            if not text:
                continue
            want = ref_token(model, tok, prompt, text)
            assert s["step_rewards"] == pytest.approx(want, rel=1e-4)
            assert s["reward"] == pytest.approx(want[-1], rel=1e-4)


def test_the_library_scores_steps_without_any_records(models):
    from verifiers.rm import load_reward_model

    for key, ref, tok in (("tag", ref_tag, _tokenizer(["ки"])), ("token", ref_token, _tokenizer(["<extra_0>"]))):
        path, model = models[key]
        rm = load_reward_model(str(path), device="cpu")
        assert rm.kind == "prm"
        items = [(PROMPTS[0], steps(TEXTS[0][0])), ([{"role": "user", "content": PROMPTS[1]}], steps(TEXTS[1][0]))]
        got = rm.score_steps(items, batch_size=2)
        assert got[0] == pytest.approx(ref(model, tok, PROMPTS[0], TEXTS[0][0]), rel=1e-4)
        assert got[1] == pytest.approx(ref(model, tok, PROMPTS[1], TEXTS[1][0]), rel=1e-4)


# --- plumbing ----------------------------------------------------------------------------------

def test_fields_kept_notes_and_pass_through(models):
    path, _ = models["orm"]
    recs = records() + [{"id": 9, "prompt": "x", "error": "too long"}]
    r = tts("score", "-", "--rm", path, "--quiet", "--device", "cpu", input=jsonl(recs))
    assert r.code == 0, r.stderr
    out = r.records()
    assert len(out) == 3 and out[2] == recs[2]
    for got, want in zip(out[:2], recs[:2]):
        # the record gains `score` and the reward model's entry in `cost`; nothing else changes
        assert [o["role"] for o in got["cost"]["other"]] == ["reward"]
        assert {k: v for k, v in got.items() if k not in ("score", "cost")} == {
            **want, "samples": [{**s, **({"reward": g["reward"]} if s["text"] else {})}
                                for s, g in zip(want["samples"], got["samples"])]}
    assert "line 2: sample 1 has no text" in r.stderr and "line 3: no samples" in r.stderr
    # then the aggregators read the reward
    agg = tts("aggregate", "-", "-a", "best-of-n", "-a", "majority", input=r.stdout)
    assert agg.code == 0, agg.stderr
    best = agg.records()[0]["aggregates"]["best-of-n"]
    rewards = {s["i"]: s["reward"] for s in out[0]["samples"]}
    assert best["used"] and max(rewards.values()) in [rewards[i] for i in best["used"]]


def test_same_bytes_for_the_same_command(models):
    path, _ = models["tag"]
    assert score(path).stdout == score(path).stdout


def one_line(r):
    assert r.code == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("tts: error: "), r.stderr
    return r.stderr


def test_bad_models_and_options_are_one_line(models, tmp_path):
    orm, tag = models["orm"][0], models["tag"][0]
    assert "not a PRM" in one_line(tts("score", "-", "--rm", orm, "--kind", "prm", input=""))
    assert "not an ORM" in one_line(tts("score", "-", "--rm", tag, "--kind", "orm", input=""))
    assert "not found" in one_line(tts("score", "-", "--rm", tmp_path / "nothing", input=""))
    assert "--good does not apply" in one_line(tts("score", "-", "--rm", orm, "--good", "y", input=""))
    # a causal LM whose vocabulary has no single-token tag is not a step-tag PRM
    plain = tmp_path / "plain"
    _save(tmp_path, "plain", "LlamaForCausalLM", _tokenizer())
    assert "is 4 tokens" in one_line(tts("score", "-", "--rm", plain, input=""))
    # a head this tool does not read
    bert = tmp_path / "base"
    _save(tmp_path, "base", "LlamaModel", _tokenizer())
    assert "not a reward model" in one_line(tts("score", "-", "--rm", bert, input=""))


def test_too_long_a_response_names_the_record(models):
    path, _ = models["orm"]
    recs = records()
    recs[1]["samples"][2]["text"] = "word " * 100
    r = tts("score", "-", "--rm", path, "--quiet", "--device", "cpu", input=jsonl(recs))
    assert r.code == 2 and r.stdout == ""  # the chunk is checked before any forward pass
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("tts: error: <stdin> line 2: sample 2:") and "context (256)" in err


def test_resume_appends_the_rest_and_refuses_other_settings(models, tmp_path):
    path, _ = models["tag"]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(jsonl(records()))
    full = tmp_path / "full.jsonl"
    assert tts("score", src, "--rm", path, "--device", "cpu", "-o", full, "--quiet").code == 0
    out.write_text(full.read_text().splitlines()[0] + "\n")
    r = tts("score", src, "--rm", path, "--device", "cpu", "-o", out, "--resume", "--quiet")
    assert r.code == 0, r.stderr
    assert out.read_text() == full.read_text() and "skipped 1 records" in r.stderr
    err = one_line(tts("score", src, "--rm", path, "--device", "cpu", "-o", out, "--resume", "--reduce", "min"))
    assert "reduce" in err and "line 1" in err


# --- a checkpoint that ships its own architecture (as Qwen2.5-Math-PRM does) --------------------

CONFIG_PY = '''from transformers import Qwen2Config


class TinyPRMConfig(Qwen2Config):
    model_type = "tiny_prm"
'''
MODELING_PY = '''from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel

from .configuration_tiny_prm import TinyPRMConfig


class TinyForProcessRewardModel(Qwen2PreTrainedModel):
    config_class = TinyPRMConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        h = config.hidden_size
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
'''


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    import importlib.util
    import sys

    path = tmp_path_factory.mktemp("remote") / "tinyprm"
    path.mkdir()
    (path / "configuration_tiny_prm.py").write_text(CONFIG_PY)
    (path / "modeling_tiny_prm.py").write_text(MODELING_PY)
    pkg = "tiny_prm_code"
    spec = importlib.util.spec_from_file_location(pkg, path / "__init__.py", submodule_search_locations=[str(path)])
    (path / "__init__.py").write_text("")
    sys.modules[pkg] = importlib.util.module_from_spec(spec)
    conf = importlib.import_module(f"{pkg}.configuration_tiny_prm")
    modeling = importlib.import_module(f"{pkg}.modeling_tiny_prm")
    (path / "__init__.py").unlink()
    tok = _tokenizer(["<extra_0>"])
    base = _config("Qwen2", tok)
    torch.manual_seed(3)
    model = modeling.TinyForProcessRewardModel(conf.TinyPRMConfig(**base.to_dict())).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_tiny_prm.TinyPRMConfig",
                       "AutoModel": "modeling_tiny_prm.TinyForProcessRewardModel"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path, model


def test_a_custom_architecture_needs_trust_remote_code(remote):
    path, model = remote
    err = one_line(tts("score", "-", "--rm", path, input=""))
    assert "TinyForProcessRewardModel" in err and "--trust-remote-code" in err
    r = score(path, "--trust-remote-code")
    tok = _tokenizer(["<extra_0>"])

    def ref(prompt, text):
        ids = chat_ids(tok, prompt, "".join(s + "<extra_0>" for s in steps(text)))
        with torch.no_grad():
            probs = model(ids)[0][0].softmax(-1)
        return probs[ids[0] == tok.convert_tokens_to_ids("<extra_0>")][:, 1].tolist()

    for rec, prompt, texts in zip(r.records(), PROMPTS, TEXTS):
        assert rec["score"]["format"] == "prm-token"
        for s, text in zip(rec["samples"], texts):
            if text:
                assert s["step_rewards"] == pytest.approx(ref(prompt, text), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_cpu_reference(models):
    for key, ref, tok in (("orm", ref_orm, _tokenizer()), ("tag", ref_tag, _tokenizer(["ки"])),
                          ("token", ref_token, _tokenizer(["<extra_0>"]))):
        path, model = models[key]
        out = score(path, "--dtype", "float32", device="cuda").records()
        for rec, prompt, texts in zip(out, PROMPTS, TEXTS):
            for s, text in zip(rec["samples"], texts):
                if text:
                    got = s["reward"] if key == "orm" else s["step_rewards"]
                    assert got == pytest.approx(ref(model, tok, prompt, text), rel=1e-3, abs=1e-4), key
        # the default dtype on CUDA (bfloat16) runs too; its rounding is coarser than this test's tolerance
        assert all("reward" in s for s in score(path, device="cuda").records()[0]["samples"])


def test_a_record_without_a_prompt_is_one_line(models):
    recs = records()
    del recs[1]["prompt"]
    r = tts("score", "-", "--rm", models["orm"][0], "--quiet", "--device", "cpu", input=jsonl(recs))
    assert r.code == 2 and r.stderr.startswith("tts: error: <stdin> line 2: the record has neither")


def test_orm_without_a_pad_token_scores_one_at_a_time(tmp_path):
    tok = _tokenizer()
    path, model = _save(tmp_path, "nopad", "LlamaForSequenceClassification", tok, num_labels=1)
    cfg = json.loads((path / "config.json").read_text())
    cfg["pad_token_id"] = None
    (path / "config.json").write_text(json.dumps(cfg))
    model.config.pad_token_id = None
    out = score(path).records()
    for rec, prompt, texts in zip(out, PROMPTS, TEXTS):
        for s, text in zip(rec["samples"], texts):
            if text:
                assert s["reward"] == pytest.approx(ref_orm(model, tok, prompt, text), rel=1e-4, abs=1e-5)

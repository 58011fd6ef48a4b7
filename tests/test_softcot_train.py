"""`tts softcot train`: the loss falls on a fixed batch, the contrastive term is right for any
batch size, checkpoints reload to identical outputs, the CLI trains and resumes."""
import math

import orjson
import pytest
import torch

from strategies.softcot.projection import Pair, Projection, tokenizer_family
from strategies.softcot.thoughts import init_token_ids
from strategies.softcot.train import Example, Trainer, TrainOptions, contrastive_loss, example_of, fit
from tests.cli import tts

DATA = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "rationale": "He has 3 + 4 = 7 apples.\nThe answer is \\boxed{7}."},
    {"question": "A pen costs $2. How much do 5 pens cost?",
     "answer": "5 pens cost 5 * 2 = <<5*2=10>>10 dollars.\n#### 10"},
    {"question": "Sara reads 6 pages a day. How many pages in 3 days?",
     "rationale": "6 * 3 = 18 pages.\nThe answer is \\boxed{18}."},
    {"question": "There are 9 birds and 4 fly away. How many are left?",
     "rationale": "9 - 4 = 5.\nThe answer is \\boxed{5}."},
]


@pytest.fixture(scope="module")
def tiny2():
    from strategies.tiny import tiny_model

    return tiny_model("llama", seed=11)


def trainer_for(model, tok, learn_init=False, chains=3, lr=1e-2, weight=0.1):
    d = model.config.hidden_size
    rows = model.get_input_embeddings().weight.detach()[torch.tensor(init_token_ids(tok, chains))]
    proj = Projection.fresh(d, d, chains if learn_init else 0, init_rows=rows, seed=0)
    opts = TrainOptions(lr=lr, batch_size=2, thoughts=3, chains=chains, learn_init=learn_init,
                        contrastive_weight=weight)
    return Trainer(model, tok, model, tok, proj, opts)


def test_gsm8k_records_become_boxed_rationales():
    ex = example_of(DATA[1])
    assert ex.rationale == "5 pens cost 5 * 2 = 10 dollars.\nThe answer is \\boxed{10}."
    assert ex.prompt.startswith(DATA[1]["question"]) and ex.prompt.endswith("within \\boxed{}.")
    with pytest.raises(ValueError, match="rationale"):
        example_of({"question": "x", "answer": "no marker"})


@pytest.mark.parametrize("learn_init", [False, True])
def test_one_step_reduces_the_loss_on_a_fixed_batch(tiny2, learn_init):
    model, tok = tiny2
    tr = trainer_for(model, tok, learn_init=learn_init, lr=1e-4)
    batch = [example_of(r) for r in DATA[:2]]
    before = tr.losses(batch)[0].item()
    init_before = None if tr.proj.init is None else tr.proj.init.detach().clone()
    tr.step(batch)
    tr.step_no = 0   # the same chain per example as before the step
    after = tr.losses(batch)[0].item()
    assert math.isfinite(before) and after < before
    if learn_init:
        assert (tr.proj.init.detach() - init_before).abs().max() > 0
    assert all(not p.requires_grad for p in model.parameters())


def independent_infonce(z, tau, teacher=None):
    """Per example and chain i: -log softmax_j of cos(z_i, teacher_j) / tau, target j = i."""
    teacher = z if teacher is None else teacher
    total, count = 0.0, 0
    for b in range(z.shape[0]):
        s = [v.reshape(-1) / v.reshape(-1).norm() for v in z[b]]
        t = [v.reshape(-1) / v.reshape(-1).norm() for v in teacher[b]]
        for i in range(len(s)):
            sims = torch.stack([s[i] @ f for f in t]) / tau
            total += -(sims[i] - torch.logsumexp(sims, 0))
            count += 1
    return total / count


def by_hand_dropout(z, p, seed):
    """nn.Dropout's map with the documented draw: keep where torch.rand >= p, scale by 1 / (1 - p)."""
    u = torch.rand(z.shape, generator=torch.Generator().manual_seed(seed))
    out = z.detach().clone()
    for idx in torch.nonzero(torch.ones_like(u, dtype=torch.bool)).tolist():
        out[tuple(idx)] = 0.0 if u[tuple(idx)] < p else z[tuple(idx)] * (1.0 / (1.0 - p))
    return out


@pytest.mark.parametrize("B", [1, 4])
def test_contrastive_positive_is_a_dropout_copy_by_default(B):
    """The reference's InfoNCE (SoftCoT++, nn.Dropout(p=0.5) teacher): the default."""
    g = torch.Generator().manual_seed(B)
    z = torch.randn(B, 4, 3, 8, generator=g, dtype=torch.float64)
    z[:, 1] = z[:, 0] + 0.1 * z[:, 1]   # two near-identical sets: a large, informative loss
    z.requires_grad_(True)
    loss = contrastive_loss(z, 0.05, generator=torch.Generator().manual_seed(99))
    assert torch.isfinite(loss)
    teacher = by_hand_dropout(z, 0.5, 99)
    assert 0.3 < float((teacher == 0).double().mean()) < 0.7
    torch.testing.assert_close(loss, independent_infonce(z.detach(), 0.05, teacher))
    # not the self-positive: its diagonal is constant, the dropout copy's is not
    assert abs(float(loss.detach()) - float(independent_infonce(z.detach(), 0.05))) > 1e-3
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # every example of the batch gets gradient, not just the first
    assert all(z.grad[b].abs().sum() > 0 for b in range(B))
    assert TrainOptions().positive == "dropout" and TrainOptions().dropout == 0.5


@pytest.mark.parametrize("B", [1, 4])
def test_contrastive_self_positive_option(B):
    g = torch.Generator().manual_seed(B)
    z = torch.randn(B, 4, 3, 16, generator=g, dtype=torch.float64)
    z[:, 1] = z[:, 0] + 0.1 * z[:, 1]
    z.requires_grad_(True)
    loss = contrastive_loss(z, 0.05, positive="self")
    torch.testing.assert_close(loss, independent_infonce(z.detach(), 0.05))
    loss.backward()
    assert all(z.grad[b].abs().sum() > 0 for b in range(B))


def test_saved_checkpoint_reloads_to_identical_outputs(tiny2, tmp_path):
    from strategies.generators.params import SoftCoTParams
    from strategies.generators.softcot import SoftCoT
    from strategies.runner import GenerateOptions, generate
    from strategies.models import Loaded

    model, tok = tiny2
    tr = trainer_for(model, tok, learn_init=True, chains=2)
    fam = tokenizer_family(tok)
    d = model.config.hidden_size
    hist = fit(tr, [example_of(r) for r in DATA], str(tmp_path / "p.safetensors"), Pair("t", "t", d, d, fam, fam))
    assert len(hist) == 1 and math.isfinite(hist[0]["loss"])
    loaded = Projection.load(tmp_path / "p.safetensors")
    assert loaded.meta["epochs_done"] == "1"
    lm = Loaded(model=model, tokenizer=tok, name="t", source="-", sha256=None)

    def out(p):
        gen = SoftCoT(SoftCoTParams(thoughts=3, perturb="init-tokens"), model, tok, p)
        recs = generate([{"id": 1, "prompt": DATA[0]["question"]}], lm, gen, GenerateOptions(n=2, max_new_tokens=8))
        return [(s["text"], s["logprob"]) for r in recs for s in r["samples"]]

    tr.proj.requires_grad_(False)
    assert out(tr.proj) == out(loaded)


def test_cli_trains_and_resumes(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(orjson.dumps(r).decode() + "\n" for r in DATA))
    out = tmp_path / "proj.safetensors"
    res = tts("softcot", "train", data, "-o", out, "-m", "tiny-random", "--thoughts", "2", "--chains", "2", "-q")
    assert res.code == 0, res.stderr
    first = orjson.loads(res.stdout)
    assert first["examples"] == 4 and len(first["epochs"]) == 1 and out.exists()
    res = tts("softcot", "train", data, "-o", out, "-m", "tiny-random", "--thoughts", "2", "--chains", "2",
              "--epochs", "2", "--resume", "-q")
    assert res.code == 0, res.stderr
    assert [e["epoch"] for e in orjson.loads(res.stdout)["epochs"]] == [2]
    assert Projection.load(out).meta["epochs_done"] == "2"
    # and the generator takes it
    res = tts("generate", "-", "-m", "tiny-random", "--mode", "softcot", "--projection", out, "--thoughts", "2",
              "--max-new-tokens", "2", "-q", input='{"prompt": "1+1?"}\n')
    assert res.code == 0, res.stderr
    assert res.records()[0]["samples"][0]["softcot"]["projection"] == str(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no rationale"}\n')
    res = tts("softcot", "train", bad, "-o", tmp_path / "x.safetensors", "-m", "tiny-random")
    assert res.code == 2 and "line 1" in res.stderr


def test_training_uses_the_reference_template_on_its_families():
    """On a Qwen-family tokenizer the trainer's base prompt is the reference's, around the bare
    question, followed by the rationale (rendered by hand in tests/test_softcot.py)."""
    from tests.test_softcot import family_model, reference_inputs

    lm = family_model("qwen")
    model, tok = lm.model, lm.tokenizer
    tr = trainer_for(model, tok, chains=2)
    ex = example_of(DATA[0])
    _, with_header, b0, _, _ = reference_inputs(tok, tok, DATA[0]["question"], 3, "qwen")
    seen = {}

    def spy(*a, **kw):
        seen["x"] = kw["inputs_embeds"].detach()
        return real(*a, **kw)

    real = tr.base.forward
    tr.base.forward = spy
    try:
        total, lm_loss, cl = tr.losses([ex])
    finally:
        del tr.base.forward
    E = model.get_input_embeddings().weight.detach()
    x = seen["x"][0]
    prompt = torch.tensor(with_header)
    keep = [i for i in range(len(with_header)) if not b0 <= i < b0 + 3]
    torch.testing.assert_close(x[keep], E[prompt][keep])
    assert (x[b0: b0 + 3] - E[prompt][b0: b0 + 3]).abs().max() > 1e-3
    assert math.isfinite(total.item()) and cl.item() > 0

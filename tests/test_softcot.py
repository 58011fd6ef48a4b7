"""SoftCoT generation (--mode softcot): placeholders and injection checked against an independent
computation with transformers, chains and perturbations, checkpoints, output fields, bad input."""
import pytest
import torch

from strategies.engine import Engine
from strategies.generators.params import DiscreteParams, SoftCoTParams
from strategies.generators.softcot import SoftCoT
from strategies.runner import GenerateOptions, generate
from strategies.softcot.projection import Pair, Projection, tokenizer_family
from strategies.softcot.thoughts import INSTRUCTION, MARK, placeholder_id
from tests.cli import tts
from strategies.models import Loaded

Q = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.fixture(scope="module")
def pair():
    from strategies.tiny import tiny_model

    model, tok = tiny_model("llama", seed=3)
    return Loaded(model=model, tokenizer=tok, name="tiny", source="-", sha256=None)


def random_projection(d_a, d_b, n_init=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = Projection(d_a, d_b, n_init)
    with torch.no_grad():
        p.linear.weight.copy_(torch.randn(d_b, d_a, generator=g) * 0.05)
        p.linear.bias.copy_(torch.randn(d_b, generator=g) * 0.01)
        if n_init:
            p.init.copy_(torch.randn(n_init, d_a, generator=g))
    return p.requires_grad_(False)


def softcot(loaded, proj, **kw):
    kw.setdefault("sampling", DiscreteParams(temperature=1.0))
    return SoftCoT(SoftCoTParams(**kw), loaded.model, loaded.tokenizer, proj, assistant_name=loaded.name)


def independent_thoughts(model, tok, question, P, proj_w, proj_b, init=None):
    """The assistant's last-layer states at P placeholders by transformers' own forward (with
    output_hidden_states), projected by hand: nothing from strategies.softcot.thoughts."""
    content = INSTRUCTION + "\n\n" + question + "\n\n"
    text = tok.apply_chat_template([{"role": "user", "content": content + MARK}], tokenize=False)
    head = tok(text.split(MARK)[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor(head + [len(tok) - 1] * P)
    E = model.get_input_embeddings().weight.detach()
    x = E[ids].clone()
    if init is not None:
        x[len(head):] = init
    with torch.no_grad():
        h = model(inputs_embeds=x[None], output_hidden_states=True).hidden_states[-1][0, len(head):]
    return h @ proj_w.T + proj_b


def first_logits(loaded, gen, obj, n=1):
    """Every request's first decoded logits, by the engine."""
    eng = Engine(loaded.model, loaded.tokenizer, gen, batch_size=8, max_new_tokens=1)
    reqs = gen.requests(_req(obj, n), obj, loaded.tokenizer, GenerateOptions(n=n))
    got = []

    def spy(active):
        logits, sig = Engine.forward(eng, active)
        got.append(logits[0].double().clone())
        return logits, sig

    eng.forward = spy
    list(eng.run(reqs))
    return reqs, got


def _req(obj, n):
    from strategies.rows import Request

    return Request(key=obj.get("id", 1), prompt_ids=[0], n=n)


def test_placeholders_end_the_user_turn_and_injection_is_exact(pair):
    model, tok = pair.model, pair.tokenizer
    d = model.config.hidden_size
    proj = random_projection(d, d)
    gen = softcot(pair, proj, thoughts=3)
    obj = {"id": 7, "prompt": Q}
    (req,), (logits,) = first_logits(pair, gen, obj)
    at, vectors = req.inject
    # the placeholders: 3 consecutive ids right after the question, before the template's turn end
    plain = tok(tok.apply_chat_template([{"role": "user", "content": Q + "\n\n"}], add_generation_prompt=True,
                                        tokenize=False), add_special_tokens=False)["input_ids"]
    start = int(at[0])
    assert at.tolist() == [start, start + 1, start + 2]
    assert req.prompt_ids[:start] + req.prompt_ids[start + 3:] == plain
    assert all(req.prompt_ids[i] == placeholder_id(tok) for i in at.tolist())
    assert tok.decode(req.prompt_ids[:start]).rstrip().endswith(Q)
    # the injected vectors are the projected thoughts, computed independently
    want = independent_thoughts(model, tok, Q, 3, proj.linear.weight, proj.linear.bias)
    torch.testing.assert_close(vectors.float(), want.float(), atol=1e-5, rtol=1e-5)
    # the base model sees exactly: token embeddings everywhere, the thoughts at the placeholders
    E = model.get_input_embeddings().weight.detach()
    ids = torch.tensor(req.prompt_ids)
    x = E[ids].clone()
    x[at] = want
    with torch.no_grad():
        ref = model(inputs_embeds=x[None]).logits[0, -1].double()[: len(tok)]
        untouched = model(inputs_embeds=E[ids][None]).logits[0, -1].double()[: len(tok)]
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert (logits - untouched).abs().max() > 1e-3


def test_identity_projection_rescales_to_the_embedding_norm(pair):
    E = pair.model.get_input_embeddings().weight.detach()
    proj = Projection.identity(E)
    h = torch.randn(5, E.shape[1]) * 30
    out = proj(h)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((5,), float(E.norm(dim=1).mean())))
    torch.testing.assert_close(out / out.norm(dim=-1, keepdim=True), h / h.norm(dim=-1, keepdim=True))


def test_init_token_chains_differ_in_thoughts_and_traces(pair):
    model, tok = pair.model, pair.tokenizer
    d = model.config.hidden_size
    proj = random_projection(d, d)
    gen = softcot(pair, proj, thoughts=2, perturb="init-tokens", per_chain=2)
    obj = {"id": 1, "prompt": Q}
    reqs = gen.requests(_req(obj, 6), obj, tok, GenerateOptions(n=6))
    assert [(r.sample_offset, r.n) for r in reqs] == [(0, 2), (2, 2), (4, 2)]
    E = model.get_input_embeddings().weight.detach()
    for c, r in enumerate(reqs):   # chain c's initial vector: embedding row len(tok) - 1 - c
        want = independent_thoughts(model, tok, Q, 2, proj.linear.weight, proj.linear.bias, init=E[len(tok) - 1 - c])
        torch.testing.assert_close(r.inject[1].float(), want.float(), atol=1e-5, rtol=1e-5)
    v = [r.inject[1] for r in reqs]
    assert min((v[a] - v[b]).abs().max() for a in range(3) for b in range(a + 1, 3)) > 1e-3
    rec = next(generate([obj], pair, gen, GenerateOptions(n=6, max_new_tokens=12)))
    assert [s["i"] for s in rec["samples"]] == list(range(6))
    assert [s["softcot"]["chain"] for s in rec["samples"]] == [0, 0, 1, 1, 2, 2]
    assert len({s["text"] for s in rec["samples"]}) > 1


def test_learned_init_vectors_cycle_with_different_seeds(pair):
    model, tok = pair.model, pair.tokenizer
    d = model.config.hidden_size
    proj = random_projection(d, d, n_init=2)
    gen = softcot(pair, proj, thoughts=2, perturb="init-tokens")
    obj = {"id": 1, "prompt": Q}
    reqs = gen.requests(_req(obj, 3), obj, tok, GenerateOptions(n=3))
    want0 = independent_thoughts(model, tok, Q, 2, proj.linear.weight, proj.linear.bias, init=proj.init[0])
    torch.testing.assert_close(reqs[0].inject[1].float(), want0.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reqs[2].inject[1], reqs[0].inject[1])   # chain 2 reuses vector 0…
    assert (reqs[1].inject[1] - reqs[0].inject[1]).abs().max() > 1e-3
    rec = next(generate([obj], pair, gen, GenerateOptions(n=3, max_new_tokens=12)))
    assert rec["samples"][0]["text"] != rec["samples"][2]["text"]     # …with its own sampling seed


def test_gaussian_perturbation_is_seeded_noise_on_the_projected_thoughts(pair):
    d = pair.model.config.hidden_size
    proj = random_projection(d, d)
    obj = {"id": 4, "prompt": Q}
    clean = softcot(pair, proj, thoughts=2).requests(_req(obj, 2), obj, pair.tokenizer, GenerateOptions(n=2))
    noisy = softcot(pair, proj, thoughts=2, perturb="gaussian", perturb_sigma=0.5)
    a = noisy.requests(_req(obj, 2), obj, pair.tokenizer, GenerateOptions(n=2))
    b = noisy.requests(_req(obj, 2), obj, pair.tokenizer, GenerateOptions(n=2))
    torch.testing.assert_close(a[0].inject[1], b[0].inject[1])   # same seed, same noise
    for c in range(2):
        delta = a[c].inject[1] - clean[c].inject[1]
        assert 0.35 < float(delta.std()) < 0.65
    assert (a[0].inject[1] - a[1].inject[1]).abs().max() > 0.1


def test_checkpoint_round_trip_and_reference_format_give_identical_outputs(pair, tmp_path):
    model, tok = pair.model, pair.tokenizer
    d = model.config.hidden_size
    proj = random_projection(d, d, n_init=3)
    fam = tokenizer_family(tok)
    proj.save(tmp_path / "p.safetensors", Pair("tiny", "tiny", d, d, fam, fam))
    again = Projection.load(tmp_path / "p.safetensors")
    assert again.pair.assistant_tokenizer == fam and again.check("tiny", "tiny", d, d, fam, fam) == []
    torch.save({"weight": proj.linear.weight.clone(), "bias": proj.linear.bias.clone()}, tmp_path / "ref.bin")
    ref = Projection.load(tmp_path / "ref.bin")
    assert ref.kind == "reference" and ref.init is None
    opts = GenerateOptions(n=4, max_new_tokens=10, seed=3)
    objs = [{"id": 1, "prompt": Q}, {"id": 2, "prompt": "What is 6 times 7?"}]

    def texts(p, **kw):
        recs = generate(objs, pair, softcot(pair, p, thoughts=2, **kw), opts)
        return [[(s["text"], s["logprob"]) for s in r["samples"]] for r in recs]

    assert texts(proj, perturb="init-tokens") == texts(again, perturb="init-tokens")
    assert texts(proj) == texts(ref)


def _cli(*extra, input_=None):
    return tts("generate", "-", "-m", "tiny-random", "--mode", "softcot", "--max-new-tokens", "3", "-q", *extra,
               input=input_ or '{"id": 1, "prompt": "2+2?"}\n')


def test_cli_output_fields_and_identity_label():
    res = _cli("-n", "4", "--per-chain", "2", "--perturb", "init-tokens", "--trace")
    assert res.code == 0, res.stderr
    (rec,) = res.records()
    assert rec["run"]["projection"] == "identity-untrained" and rec["run"]["mode"] == "softcot"
    assert rec["run"]["temperature"] == 1.0 and rec["run"]["top_p"] == 1.0
    for s in rec["samples"]:
        assert s["softcot"]["chain"] == s["i"] // 2 and s["softcot"]["perturb"] == "init-tokens"
        assert s["softcot"]["projection"] == "identity-untrained" and len(s["softcot"]["thought_norms"]) == 4


def test_cli_bad_input_is_one_line_before_model_work(tmp_path):
    from safetensors.torch import save_file

    for args, want in [(("--thoughts", "0"), "--thoughts must be at least 1"),
                       (("--projection", str(tmp_path / "missing.safetensors")), "no such file"),
                       (("--per-chain", "0"), "--per-chain")]:
        res = _cli(*args)
        assert res.code == 2 and want in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    # shapes that do not fit tiny-random (hidden 64)
    save_file({"weight": torch.zeros(64, 32), "bias": torch.zeros(64)}, str(tmp_path / "bad.safetensors"))
    res = _cli("--projection", tmp_path / "bad.safetensors")
    assert res.code == 2 and "maps 32 -> 64" in res.stderr and not res.stdout
    # a checkpoint trained for an assistant with another tokenizer
    p = Projection(64, 64)
    p.save(tmp_path / "other.safetensors", Pair("other-model", "tiny-random", 64, 64, "999:abc", ""))
    res = _cli("--projection", tmp_path / "other.safetensors")
    assert res.code == 2 and "different tokenizer" in res.stderr and "other-model" in res.stderr
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    res = _cli("--projection", tmp_path / "junk.bin")
    assert res.code == 2 and "not a safetensors" in res.stderr
    res = _cli("--assistant", "tiny-random:qwen3")
    assert res.code == 2 and "identity projection needs assistant = base" in res.stderr


def test_bench_softcot_json_times_the_same_work_on_both_sides():
    res = tts("bench", "--model", "tiny-random", "--mode", "softcot", "--json")
    assert res.code == 0, res.stderr
    (out,) = res.records()
    assert out["workload"] == "softcot" and out["softcot_tokens"] == out["discrete_tokens"] == 32 * 128
    assert out["chains"] == 4 and out["projection"] == "identity-untrained"
    assert out["ratio"] == pytest.approx(out["softcot_tok_s"] / out["discrete_tok_s"], rel=1e-2)


# ----- the reference's templates (xuyige/SoftCoT, utils.py pre_process_gsm8k, split="test") ----------
# Rendered here from the reference's own string constants and index arithmetic, independently of
# strategies.softcot.thoughts.
LLAMA_TEMPLATE = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                  "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                  "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
REF_TOKENS = {"llama": ["<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"],
              "qwen": ["<|endoftext|>", "<|box_start|>", "<|box_end|>"],
              "qwen3": ["<|endoftext|>", "<think>", "</think>"]}


def family_model(family, rows=None):
    """A tiny model whose tokenizer has the family's special tokens (and, for Llama, its turn markup);
    `rows`: its embedding table's length (default: the tokenizer's + 13)."""
    from strategies.tiny import SPECIALS, byte_tokenizer, tiny_model

    tok = byte_tokenizer()
    extra = REF_TOKENS[family][1:]
    if family == "llama":
        extra = extra + ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>"]
        tok.chat_template = LLAMA_TEMPLATE
    if family == "qwen3":   # Qwen3's markers, and its empty think block when thinking is off
        extra = extra + ["<|box_start|>", "<|box_end|>"]
        tok.chat_template = tok.chat_template + ("{% if add_generation_prompt and enable_thinking is defined and "
                                                 "not enable_thinking %}<think>\n\n</think>\n\n{% endif %}")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS + extra})
    model, tok = tiny_model({"llama": "llama", "qwen": "qwen2", "qwen3": "qwen3"}[family], seed=5, tokenizer=tok,
                            vocab_pad=13 if rows is None else rows - len(tok))
    return Loaded(model=model, tokenizer=tok, name=f"tiny-{family}", source="-", sha256=None)


def reference_inputs(tok, atok, question, n, backbone):
    """pre_process_gsm8k(split='test', add_bot_eot=True) for base = assistant = `backbone`."""
    unk, bot, eot = REF_TOKENS[backbone]
    soft_thoughts = f'{bot}{unk * n}{eot}'
    input_template = (f'Solve the following math problem efficiently and clearly:\n'
                      f'- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal equation.\n'
                      f'- For complex problems (3 steps or more):\n'
                      f'Use this step-by-step format:\n\n'
                      f'## Step 1: [Brief calculations]\n'
                      f'## Step 2: [Brief calculations]\n'
                      f'...\n'
                      f'Regardless of the approach, always conclude with:\n'
                      f'Therefore, the final answer is: $\\boxed{{answer}}$. I hope it is correct.\n'
                      f'Where [answer] is just the final number or expression that solves the problem.\n\n'
                      f'Problem: {question}')
    input_content = f'{input_template}\n\n'
    input_content += (f'There are some prompts generated by a weaker assistant model. Some prompts maybe useful '
                      f'while others maybe unuseful for your reasoning. '
                      f'If the prompts are correct, you can use it as reference. '
                      f'If the prompts are not correct, '
                      f'you can ignore them and focus back to solving the problem.\n'
                      f'Here are prompts: {soft_thoughts}')
    input_messages = [{'role': 'user', 'content': input_content}]
    if backbone == "qwen3":
        with_header = tok.apply_chat_template(input_messages, add_generation_prompt=True,
                                              enable_thinking=False)["input_ids"]
        input_ids = tok.apply_chat_template(input_messages, add_generation_prompt=False,
                                            enable_thinking=False)["input_ids"]
    else:
        input_ids = tok.apply_chat_template(input_messages)["input_ids"]
        # what we add: the assistant header after the reference's evaluation prompt
        with_header = tok.apply_chat_template(input_messages, add_generation_prompt=True)["input_ids"]
    qwen = backbone in ("qwen", "qwen3")
    extra = (f'- The other language model is good enough to understand the problem, so what you need to do is '
             f'generate some informative key tokens that summarize the problem.\n') if qwen else ""
    assistant_template = (
        f'You are required to generate {n} tokens to help another language model '
        f'to solve the following math reasoning task efficiently and clearly. '
        f'Here are the requirements of your generated tokens:\n'
        f'- The tokens should include some useful information for the reasoning problem, '
        f'for example, the numbers and the operations needed for calculation.\n'
        f'- Generate the tokens starts from the most important or the highest related tokens.\n'
        f'- **Informative tokens are required**: (1) Do not need to generate a sentence or paragraph, '
        f'(2) Do not need to generate the uninformative tokens such as serial number.\n'
        f'- The tokens should be useful for large language model to answer the question with the numbers.\n'
        + extra + f'...\n\n'
        f'Here is the problem: {question}.')
    assistant_messages = [
        {'role': 'user', 'content': f'{assistant_template}'},
        {'role': 'assistant', 'content': f'Here are {n} tokens to help the language model solve this math '
                                         f'reasoning task: {unk * n}'}]
    assistant_ids = atok.apply_chat_template(assistant_messages)["input_ids"]
    base_start = len(input_ids) - 1 - n - 1 - (1 if qwen else 0)
    assistant_start = len(assistant_ids) - 1 - n - (1 if qwen else 0)
    return input_ids, with_header, base_start, assistant_ids, assistant_start


@pytest.mark.parametrize("family", ["qwen", "llama", "qwen3"])
def test_reference_templates_for_the_families_it_supports(family):
    lm = family_model(family)
    model, tok = lm.model, lm.tokenizer
    d, n = model.config.hidden_size, 3
    proj = random_projection(d, d)
    gen = SoftCoT(SoftCoTParams(thoughts=n), model, tok, proj, assistant_name=lm.name)
    obj = {"id": 3, "prompt": Q}
    (req,) = gen.requests(_req(obj, 1), obj, tok, GenerateOptions(n=1))
    ids, with_header, b0, a_ids, a0 = reference_inputs(tok, tok, Q, n, family)
    # the reference's base prompt, with the assistant header after it (as in its training)
    assert req.prompt_ids == with_header and with_header[: len(ids)] == ids
    assert req.inject[0].tolist() == list(range(b0, b0 + n))
    assert all(req.prompt_ids[i] == tok.convert_tokens_to_ids(REF_TOKENS[family][0]) for i in range(b0, b0 + n))
    assert req.prompt_ids[b0 - 1] == tok.convert_tokens_to_ids(REF_TOKENS[family][1])
    # the thoughts: the reference's full assistant input (not cut), its index arithmetic, by hand
    E = model.get_input_embeddings().weight.detach()
    with torch.no_grad():
        h = model(inputs_embeds=E[torch.tensor(a_ids)][None], output_hidden_states=True).hidden_states[-1][0]
    want = h[a0: a0 + n] @ proj.linear.weight.T + proj.linear.bias
    torch.testing.assert_close(req.inject[1].float(), want.float(), atol=1e-5, rtol=1e-5)
    # the run record says which template ran on each side
    gen = SoftCoT(SoftCoTParams(thoughts=n), model, tok, proj, assistant_name=lm.name, base_tokenizer=tok)
    assert gen.run_fields()["template"] == {"assistant": f"reference-{family}", "base": f"reference-{family}"}


def test_models_without_reference_tokens_keep_our_template(pair):
    gen = softcot(pair, random_projection(64, 64))
    gen_b = SoftCoT(SoftCoTParams(), pair.model, pair.tokenizer, random_projection(64, 64), base_tokenizer=pair.tokenizer)
    assert gen_b.run_fields()["template"] == {"assistant": "tts", "base": "tts"}
    assert gen.run_fields()["template"]["assistant"] == "tts"
    with pytest.raises(ValueError, match="no <\\|box_start\\|>"):
        SoftCoT(SoftCoTParams(), pair.model, pair.tokenizer, random_projection(64, 64), template="reference-qwen")


def test_softcotpp_reference_checkpoint_embedding_is_loaded(pair, tmp_path):
    """The reference SoftCoT++ file: projection state dict + `embedding` (its chains' initial vectors)."""
    model, tok = pair.model, pair.tokenizer
    d = model.config.hidden_size
    proj = random_projection(d, d)
    emb = torch.randn(3, d, generator=torch.Generator().manual_seed(8))
    torch.save({"weight": proj.linear.weight.clone(), "bias": proj.linear.bias.clone(), "embedding": emb},
               tmp_path / "projection.bin")
    ref = Projection.load(tmp_path / "projection.bin")
    assert ref.kind == "reference" and ref.init is not None
    torch.testing.assert_close(ref.init, emb)
    gen = softcot(pair, ref, thoughts=2, perturb="init-tokens")
    obj = {"id": 1, "prompt": Q}
    reqs = gen.requests(_req(obj, 3), obj, tok, GenerateOptions(n=3))
    for c, r in enumerate(reqs):
        want = independent_thoughts(model, tok, Q, 2, proj.linear.weight, proj.linear.bias, init=emb[c])
        torch.testing.assert_close(r.inject[1].float(), want.float(), atol=1e-5, rtol=1e-5)
    torch.save({"weight": proj.linear.weight, "bias": proj.linear.bias, "embedding": emb, "init": emb},
               tmp_path / "both.bin")
    from strategies.softcot.projection import CheckpointError

    with pytest.raises(CheckpointError, match="both 'init' and 'embedding'") as e:
        Projection.load(tmp_path / "both.bin")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family,start", [("qwen", 150001), ("llama", 128011)])
def test_init_tokens_use_the_reference_rows_under_its_template(family, start):
    """SoftCoT++ untrained: chain c's initial vector is the reference's embedding row (llm_model.py:
    Qwen 150001 + c, Llama 128011 + c) written into the assistant's placeholder slots."""
    lm = family_model(family, rows=start + 8)
    model, tok = lm.model, lm.tokenizer
    d, n = model.config.hidden_size, 2
    proj = random_projection(d, d)
    gen = SoftCoT(SoftCoTParams(thoughts=n, perturb="init-tokens"), model, tok, proj)
    obj = {"id": 3, "prompt": Q}
    reqs = gen.requests(_req(obj, 3), obj, tok, GenerateOptions(n=3))
    _, _, _, a_ids, a0 = reference_inputs(tok, tok, Q, n, family)
    E = model.get_input_embeddings().weight.detach()
    for c, r in enumerate(reqs):
        x = E[torch.tensor(a_ids)].clone()
        x[a0: a0 + n] = E[start + c]
        with torch.no_grad():   # the decoder's states only: a 128k-row LM head over the prompt is not needed
            h = model.model(inputs_embeds=x[None]).last_hidden_state[0, a0: a0 + n]
        want = h @ proj.linear.weight.T + proj.linear.bias
        torch.testing.assert_close(r.inject[1].float(), want.float(), atol=1e-5, rtol=1e-5)

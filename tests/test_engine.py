"""The shared decode loop against independent computations with transformers."""
import math

import pytest
import torch

from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams
from strategies.tiny import ARCHS, tiny_model

PROMPTS = ["Hi", "What is two plus two?", "A much longer prompt, to make the lengths differ a lot: 1 2 3 4 5 6 7",
           "x"]


def chat_ids(tok, text):
    s = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tok(s, add_special_tokens=False)["input_ids"]


def run(model, tok, params, n=1, batch_size=64, max_new=24, seed=0, prompts=PROMPTS, **kw):
    eng = Engine(model, tok, Discrete(params), batch_size=batch_size, max_new_tokens=max_new, seed=seed, **kw)
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=n) for k, p in enumerate(prompts)]
    return eng, list(eng.run(reqs))


def hf_greedy(model, ids, max_new, vocab):
    # padded embedding rows are not tokens: we never emit them, so neither may the reference
    pad_rows = list(range(vocab, model.config.vocab_size))
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False,
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long), suppress_tokens=pad_rows or None)
    return out[0, len(ids):].tolist()


def test_installed_transformers_is_in_the_tested_range():
    """The sampler uses transformers below its public API; pyproject bounds it to what was tested."""
    import re
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if re.match(r"transformers\b", d))
    assert any(s.operator == "<" for s in req.specifier), "transformers needs an upper bound"
    assert req.specifier.contains(version("transformers")), (version("transformers"), str(req.specifier))


def test_every_supported_architecture_has_a_tiny_model():
    from strategies.decoder import SUPPORTED
    from strategies.tiny import ARCHS

    assert set(SUPPORTED) == set(ARCHS)  # so the test below covers each one against generate()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_transformers_generate(arch):
    model, tok = tiny_model(arch, seed=3)
    # batch of 3 slots for 4 prompts x 2 samples: rows refill and move slots mid-run
    _, reqs = run(model, tok, DiscreteParams(temperature=0.0), n=2, batch_size=3)
    for req, text in zip(reqs, PROMPTS):
        ref = hf_greedy(model, chat_ids(tok, text), 24, len(tok))
        for row in req.rows:
            assert row.ids == ref[: len(row.ids)]
            # stopped early only at EOS, else ran to the limit
            assert len(row.ids) == len(ref) or row.ids[-1] == tok.eos_token_id


def teacher_forced_logits(model, prompt, gen):
    with torch.no_grad():
        out = model(torch.tensor([prompt + gen], device=model.device))
    return out.logits[0, len(prompt) - 1: len(prompt) + len(gen) - 1].double()


def check_signals_by_teacher_forcing(model, vocab, reqs) -> int:
    """Every recorded per-token signal against an independent pass over each final sequence;
    returns how many tokens were checked."""
    checked = 0
    for req in reqs:
        for row in req.rows:
            lp = torch.log_softmax(teacher_forced_logits(model, req.prompt_ids, row.ids)[:, :vocab], -1)
            p = lp.exp()
            for t, tok_id in enumerate(row.ids):
                assert row.logprob[t] == pytest.approx(lp[t, tok_id].item(), abs=1e-4)
                assert row.entropy[t] == pytest.approx(-(p[t] * lp[t]).sum().item(), abs=1e-4)
                assert row.self_certainty[t] == pytest.approx(-math.log(vocab) - lp[t].mean().item(), abs=1e-4)
                assert row.confidence[t] == pytest.approx(-lp[t].topk(20).values.mean().item(), abs=1e-4)
                checked += 1
    return checked


@pytest.mark.parametrize("n,batch_size", [(3, 4), (8, 20)])
def test_per_token_signals_equal_a_teacher_forced_pass(tiny, n, batch_size, monkeypatch):
    """(3, 4): each row reads its own cache; (8, 20): rows share their prompt's cache (cascade)."""
    model, tok = tiny
    shares = count_shared_steps(monkeypatch)
    _, reqs = run(model, tok, DiscreteParams(temperature=1.0, top_k=20, top_p=0.9), n=n, batch_size=batch_size)
    assert (shares[0] > 0) == (n >= Engine.SHARE_MIN_ROWS)
    assert check_signals_by_teacher_forcing(model, len(tok), reqs) > 100


def count_shared_steps(monkeypatch) -> list[int]:
    from strategies.decoder import Decoder

    calls = [0]
    original = Decoder.decode

    def spy(self, x, positions, shared=None, **kw):
        calls[0] += shared is not None
        return original(self, x, positions, shared, **kw)

    monkeypatch.setattr(Decoder, "decode", spy)
    return calls


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("rows", [
    [[0, 3, 5, 9, 10], [1, 2, 6], [4, 7, 8, 11, 12, 13]],   # interleaved groups of different sizes
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]],  # in group order, no padding
])
def test_shared_prefix_attention_equals_per_row_attention(arch, rows):
    """Cascade attention (prompt cache read once per group, merged by log-sum-exp) against the plain
    per-row path: groups of different prompt lengths, rows at different positions."""
    from strategies.decoder import Decoder

    model, tok = tiny_model(arch, seed=4)
    dec = Decoder(model, max_slots=16)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, len(tok), (L,), generator=g) for L in (9, 23, 14)]
    B = sum(len(rs) for rs in rows)
    prefixes = [dec.prefill(p) for p in prompts]
    positions = torch.zeros(B, dtype=torch.long)
    for p, rs, prefix in zip(prompts, rows, prefixes):
        for b in rs:
            dec.cache.write_prefix(b, prefix)
            positions[b] = len(p)
    D = model.config.hidden_size
    for step in range(6):  # a few steps, so rows also attend to their own earlier tokens
        x = torch.randn(B, D, generator=g)
        pos = positions + step + torch.arange(B) % 3 * (step > 0)
        if step % 2:
            plain = dec.decode(x, pos)  # writes this step's keys/values, which decode(shared) rewrites identically
            shared = dec.decode(x, pos, dec.share(prefixes, rows, B))
        else:
            shared = dec.decode(x, pos, dec.share(prefixes, rows, B))
            plain = dec.decode(x, pos)
        torch.testing.assert_close(shared, plain, atol=2e-5, rtol=1e-5)


def test_attend_matches_its_reference():
    from strategies.attention import attend, attend_reference

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, 4, 8, generator=g), torch.randn(3, 2, 11, 8, generator=g),
               torch.randn(3, 2, 11, 8, generator=g))
    mask = torch.zeros(3, 1, 1, 11).masked_fill_(torch.rand(3, 1, 1, 11, generator=g) < 0.4, float("-inf"))
    mask[..., 0] = 0.0
    out, lse = attend(q, k, v, mask, 0.3)
    ref_out, ref_lse = attend_reference(q, k, v, mask, 0.3)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
    s = (q @ k.transpose(-1, -2)) * 0.3 + mask
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [24, 10])
def test_shared_and_per_row_decoding_give_the_same_samples(tiny, batch_size, monkeypatch):
    """batch 10 < 24 rows: prompts enter and leave mid-run, so the groups (and the decoder's stack
    of their caches) change while rows decode."""
    model, tok = tiny
    params = DiscreteParams(temperature=1.0)
    shares = count_shared_steps(monkeypatch)
    _, a = run(model, tok, params, n=6, batch_size=batch_size, max_new=40, seed=3, share_prefix=True)
    assert shares[0] > 0
    _, b = run(model, tok, params, n=6, batch_size=batch_size, max_new=40, seed=3, share_prefix=False)
    assert texts(a) == texts(b)
    for qa, qb in zip(a, b):
        for ra, rb in zip(qa.rows, qb.rows):
            assert ra.logprob == pytest.approx(rb.logprob, abs=1e-5)


def texts(reqs):
    return [[(r.ids, r.finish) for r in req.rows] for req in reqs]


def test_seeded_runs_reproduce_and_ignore_batch_size(tiny):
    model, tok = tiny
    params = DiscreteParams(temperature=1.0)
    _, a = run(model, tok, params, n=3, batch_size=64, seed=7)
    _, b = run(model, tok, params, n=3, batch_size=64, seed=7)
    _, c = run(model, tok, params, n=3, batch_size=2, seed=7)
    _, d = run(model, tok, params, n=3, batch_size=5, seed=8)
    assert texts(a) == texts(b) == texts(c)
    assert texts(a) != texts(d)
    # a record's samples do not depend on which other records share the batch
    eng = Engine(model, tok, Discrete(params), batch_size=64, max_new_tokens=24, seed=7)
    only = list(eng.run([Request(key=2, prompt_ids=chat_ids(tok, PROMPTS[2]), n=3)]))
    assert texts(only)[0] == texts(a)[2]
    # samples differ from each other
    assert len({tuple(ids) for ids, _ in texts(a)[1]}) > 1


def test_stop_strings_and_max_new_tokens(tiny):
    model, tok = tiny
    _, free = run(model, tok, DiscreteParams(temperature=1.0), n=4, max_new=40, ignore_eos=True)
    assert all(r.finish == "length" and len(r.ids) == 40 for q in free for r in q.rows)
    # pick a 2-character string that occurs in one of the free-running samples as a stop string
    row = free[1].rows[0]
    text = tok.decode(row.ids)
    stop = text[10:12]
    eng, stopped = run(model, tok, DiscreteParams(temperature=1.0), n=4, max_new=40, ignore_eos=True, stop=[stop])
    srow = stopped[1].rows[0]
    assert srow.finish == "stop"
    assert srow.ids == row.ids[: len(srow.ids)]  # same stream up to the stop
    assert stop in tok.decode(srow.ids) and stop not in tok.decode(srow.ids[:-1])
    assert stop not in eng.text_of(srow)


def test_eos_finishes_a_row():
    model, tok = tiny_model("llama", seed=0)
    with torch.no_grad():  # make EOS overwhelmingly likely after any token
        model.lm_head.weight[tok.eos_token_id] *= 0
        model.lm_head.weight[tok.eos_token_id] += model.model.norm.weight * 0 + 1
    eng, reqs = run(model, tok, DiscreteParams(temperature=0.0), n=1, max_new=30)
    ids_eos = [r.ids[-1] == tok.eos_token_id and r.finish == "stop" for q in reqs for r in q.rows]
    assert any(ids_eos)


def test_cache_growth_and_slot_moves_keep_rows_exact(tiny):
    """Rows outgrow the first cache allocation mid-decode and move between slots as others finish."""
    model, tok = tiny
    # greedy: a sampled row may legitimately flip a draw that sits on a CDF boundary when BLAS
    # rounding changes with the batch shape; the argmax chain has no such excuse
    params = DiscreteParams(temperature=0.0)
    _, small = run(model, tok, params, n=2, batch_size=3, max_new=300, seed=5, ignore_eos=True)
    _, wide = run(model, tok, params, n=2, batch_size=64, max_new=300, seed=5, ignore_eos=True)
    assert texts(small) == texts(wide)
    assert all(len(r.ids) == 300 for q in small for r in q.rows)


def test_compiled_layers_decode_like_eager(tiny):
    """--compile: the torch.compile'd layer halves give the same chains and signals (CPU here)."""
    model, tok = tiny
    params = DiscreteParams(temperature=0.0)
    _, compiled = run(model, tok, params, n=2, batch_size=3, compile=True)
    _, eager = run(model, tok, params, n=2, batch_size=3)
    for qa, qb in zip(compiled, eager):
        for a, b in zip(qa.rows, qb.rows):
            assert a.ids == b.ids
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.entropy == pytest.approx(b.entropy, abs=1e-4)


@pytest.mark.parametrize("matmul", ["weight_major", "fused", "packed"])
@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])  # qwen2: q/k/v biases; qwen3: q/k norms
def test_every_form_of_the_products_decodes_like_the_modules(arch, matmul):
    """The decode step's products in each of linear.py's forms (fused is CUDA's, packed and
    weight-major CPU's; all forced here on CPU) give the logits and keys of the model's own
    modules (float rounding only), and leave the model computing what it did."""
    from strategies import linear
    from strategies.decoder import Decoder

    if matmul == "packed" and not linear.packing_available(torch.float32):
        pytest.skip("this torch build has no oneDNN packed linear ops")
    ref_model, tok = tiny_model(arch, seed=6)
    model, _ = tiny_model(arch, seed=6)
    plain, other = Decoder(ref_model, 4, matmul="module"), Decoder(model, 4, matmul=matmul)
    ids = torch.tensor(chat_ids(tok, "What is two plus two?"))
    for dec in (plain, other):
        prefix = dec.prefill(ids[:-1])
        for slot in range(4):
            dec.cache.write_prefix(slot, prefix)
    g = torch.Generator().manual_seed(0)
    pos = torch.full((4,), len(ids) - 1)
    for step, rows in enumerate((4, 3, 1)):   # row counts other than the packing's hint run too
        x = torch.randn(rows, ref_model.config.hidden_size, generator=g)
        p = pos[:rows] + step
        torch.testing.assert_close(other.decode(x, p), plain.decode(x, p), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other.cache.k[1], plain.cache.k[1], atol=1e-5, rtol=1e-5)
    with torch.no_grad():   # fused: the modules' weights are views of the fused matrices
        torch.testing.assert_close(model(ids[None]).logits, ref_model(ids[None]).logits, atol=1e-5, rtol=1e-5)


def test_cpu_decodes_on_packed_weights_where_the_build_has_them():
    from strategies import linear
    from strategies.decoder import default_matmul

    want = "packed" if linear.packing_available(torch.float32) else "weight_major"
    assert default_matmul(torch.device("cpu"), torch.float32) == want


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_sequences_longer_than_a_sliding_window_are_refused(arch):
    """The decoder does not apply sliding-window attention; a record whose prompt plus generation
    would exceed the window gets a one-line error instead of silently different attention."""
    from strategies.layers import sliding_window
    from strategies.runner import GenerateOptions, generate
    from strategies.models import Loaded

    model, tok = tiny_model(arch, seed=2)
    if arch == "mistral":
        model.config.sliding_window = 48
    else:  # Qwen2 applies its window only where enabled (transformers 5 marks each layer's kind)
        model.config.sliding_window = 48
        model.config.use_sliding_window = True
        model.config.layer_types = ["full_attention", "sliding_attention"]
    assert sliding_window(model.config) == 48
    loaded = Loaded(model=model, tokenizer=tok, name="tiny", source="-", sha256=None)
    short_prompt = "x"
    n_prompt = len(chat_ids(tok, short_prompt))
    fits = 48 - n_prompt
    recs = list(generate([{"id": 1, "prompt": short_prompt}], loaded, Discrete(DiscreteParams(0.0)),
                         GenerateOptions(max_new_tokens=fits)))
    assert "error" not in recs[0] and recs[0]["samples"][0]["n_tokens"] <= fits
    recs = list(generate([{"id": 1, "prompt": short_prompt}], loaded, Discrete(DiscreteParams(0.0)),
                         GenerateOptions(max_new_tokens=fits + 1, on_error="skip")))
    assert "sliding attention window of 48 tokens" in recs[0]["error"] and "\n" not in recs[0]["error"]
    with pytest.raises(ValueError, match="sliding attention window"):
        list(Engine(model, tok, Discrete(), max_new_tokens=fits + 1).run([Request(key=0, prompt_ids=chat_ids(tok, "x"), n=1)]))
    if arch == "qwen2":  # a Qwen2 config that does not enable its window has none
        model.config.use_sliding_window = False
        model.config.layer_types = ["full_attention", "full_attention"]
        assert sliding_window(model.config) is None


def test_admission_reserves_the_cache_so_decoding_never_regrows_it():
    """A prompt reserves its length plus min(max_new_tokens, RESERVE) positions when admitted: the
    cache is allocated before the first step and not reallocated (copied) while rows decode."""
    model, tok = tiny_model("llama", seed=0)
    eng = Engine(model, tok, Discrete(DiscreteParams(temperature=1.0)), batch_size=4, max_new_tokens=300,
                 ignore_eos=True)
    cache = eng.decoder.cache
    ids = chat_ids(tok, PROMPTS[2])
    reallocations = []
    grow = cache.ensure_capacity

    def watch(positions):
        before = cache.generation
        grow(positions)
        if cache.generation != before:
            reallocations.append((eng.steps, cache.capacity))
    cache.ensure_capacity = watch
    out = list(eng.run([Request(key=0, prompt_ids=ids, n=3)]))
    assert [len(r.ids) for r in out[0].rows] == [300] * 3
    assert reallocations == [(0, reallocations[0][1])] and reallocations[0][1] >= len(ids) + 300


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_with_the_sign_moved_onto_sin_is_transformers_rope_bit_for_bit(dtype):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from strategies.layers import rope, signed_sin

    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(5, 4, 3, 16, generator=g).to(dtype) for _ in range(2))
    cos, sin = (torch.randn(5, 3, 16, generator=g).to(dtype) for _ in range(2))   # [batch, seq, dim]
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    c, s = cos[:, None], signed_sin(sin[:, None])
    assert torch.equal(rope(q, c, s), want_q) and torch.equal(rope(k, c, s), want_k)


def _tensor_bytes(*roots) -> int:
    """Bytes of the distinct tensors reachable from `roots` through attributes, containers and
    closures (meta placeholders hold none); each storage counted once."""
    import gc
    import types

    seen, found, stack = set(), {}, list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, str, bytes, int, float, bool)) or o is None:
            continue
        seen.add(id(o))
        if isinstance(o, torch.Tensor):
            if o.is_meta:
                continue
            if o.is_mkldnn:   # an opaque oneDNN buffer: its logical size
                found[("mkldnn", id(o))] = o.numel() * o.element_size()
            else:
                st = o.untyped_storage()
                found[st.data_ptr()] = max(found.get(st.data_ptr(), 0), st.nbytes())
            continue
        if isinstance(o, types.FunctionType):   # closures only: a function's globals are not its state
            stack.extend(c.cell_contents for c in o.__closure__ or ())
            continue
        if isinstance(o, types.MethodType):
            stack.append(o.__self__)
            continue
        stack.extend(gc.get_referents(o))
    return sum(found.values())


def _untied(model):
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    return model


@pytest.mark.parametrize("arch,tied", [("qwen2", True), ("llama", False)])
def test_a_packed_decoder_holds_one_copy_of_the_weights(arch, tied):
    """CPU: the packed copies replace the modules' weights (counted: every tensor reachable from
    the model and the decoder's products is one copy of the model, plus the tied head's packed
    copy of the embedding and the packed biases); the model's own forward gets the weights back
    bit-equal, and a second decoder over the same model releases them again."""
    from strategies import linear
    from strategies.decoder import Decoder

    if not linear.packing_available(torch.float32):
        pytest.skip("this torch build has no oneDNN packed linear ops")
    (ref, tok), (model, _) = tiny_model(arch, seed=6), tiny_model(arch, seed=6)
    if not tied:
        ref, model = _untied(ref), _untied(model)
    one_copy = _tensor_bytes(ref)
    assert one_copy == sum(t.numel() * t.element_size() for t in list(ref.parameters()) + list(ref.buffers()))
    embed = ref.get_input_embeddings().weight
    biases = sum(m.bias.numel() * 4 for m in ref.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None)
    dec = Decoder(model, 4, matmul="packed")
    held = _tensor_bytes(model, dec.mats, dec.head)
    assert held == one_copy + (embed.numel() * 4 if tied else 0) + biases
    released = [m.weight for layer in model.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    assert released and all(w.is_meta for w in released)
    assert model.lm_head.weight.is_meta != tied

    # the decoder's prefill + decode against transformers' forward on the untouched twin; the packed
    # products round differently from F.linear in float32 (different blocking), hence the tolerance
    ids = torch.tensor(chat_ids(tok, "What is two plus two?"))
    dec.cache.write_prefix(0, dec.prefill(ids[:-1]))
    logits = dec.decode(dec.embed_tokens(ids[-1:]), torch.tensor([len(ids) - 1]))
    with torch.no_grad():
        want = ref(ids[None]).logits[0, -1:]
        got = model(ids[None]).logits[0, -1:]   # the hooks restore the weights first
    torch.testing.assert_close(logits, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got, want)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert not a.is_meta and torch.equal(a, b), name
    again = Decoder(model, 4, matmul="packed")   # the shared-model case: released again, same products
    assert _tensor_bytes(model, again.mats, again.head) == held
    torch.testing.assert_close(again.decode(again.embed_tokens(ids[-1:]), torch.tensor([0])),
                               dec.decode(dec.embed_tokens(ids[-1:]), torch.tensor([0])), atol=0, rtol=0)


def _mapped_rss(path: str) -> int:
    """Resident bytes of this process's mappings of the file at `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if not head[0].endswith(":"):
            inside = len(head) > 5 and head[5] == path
        elif inside and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


def test_released_weights_leave_the_memory_of_a_mapped_checkpoint(tmp_path):
    """transformers maps a safetensors checkpoint into memory; a released weight's pages must leave
    the process even though the embedding keeps the mapping alive (measured in /proc/self/smaps)."""
    import mmap
    import os

    from transformers import AutoModelForCausalLM

    from strategies import linear
    from strategies.decoder import Decoder

    if not os.path.exists("/proc/self/smaps") or not linear.packing_available(torch.float32):
        pytest.skip("needs Linux's /proc and oneDNN packing")
    model, _ = tiny_model("llama", seed=1, hidden=256)
    model.save_pretrained(tmp_path)
    del model
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    path = str(tmp_path / "model.safetensors")
    with torch.no_grad():   # touch every page, as packing does
        for p in model.parameters():
            p.sum()
    kept = [t for name, t in model.named_parameters() if "proj" not in name]
    if _mapped_rss(path) < sum(p.numel() * 4 for p in model.parameters()):
        pytest.skip("this transformers copies the checkpoint instead of mapping it")
    Decoder(model, 2, matmul="packed")
    # what stays: the tensors not released, plus at most the two part-pages at each released weight's ends
    limit = sum(t.numel() * 4 for t in kept) + 2 * mmap.PAGESIZE * (len(list(model.parameters())) + 1)
    assert _mapped_rss(path) <= limit


def test_bf16_signals_are_float32_exact_functions_of_the_bf16_logits():
    """In bfloat16 the model runs in bfloat16 and the signals are computed in float32 from its
    logits: each recorded signal equals a float64 computation from the very logits the step
    produced, and those logits are a bfloat16 teacher-forced pass's up to bfloat16 rounding."""
    model, tok = tiny_model("llama", seed=2)
    model = model.to(torch.bfloat16)
    eng = Engine(model, tok, Discrete(DiscreteParams(temperature=1.0)), batch_size=4, max_new_tokens=12, seed=1)
    seen = []
    forward = eng.forward

    def spy(active):
        logits, sig = forward(active)
        seen.append(([(id(r), len(r.ids)) for r in active], logits.double().clone()))
        return logits, sig

    eng.forward = spy
    prompt = chat_ids(tok, "What is two plus two?")
    (req,) = eng.run([Request(key=0, prompt_ids=prompt, n=3)])
    V = len(tok)
    by_row = {}
    for keys, logits in seen:
        for b, key in enumerate(keys):
            by_row[key] = logits[b, :V]
    checked = 0
    for row in req.rows:
        ref = teacher_forced_logits(model, prompt, row.ids)[:, :V]
        for t, tok_id in enumerate(row.ids):
            z = by_row[(id(row), t)]
            assert z.dtype == torch.float64 and torch.equal(z, z.float().bfloat16().double())  # bf16 values
            lp = torch.log_softmax(z, -1)
            assert row.logprob[t] == pytest.approx(lp[tok_id].item(), abs=1e-5)
            assert row.entropy[t] == pytest.approx(-(lp.exp() * lp).sum().item(), abs=1e-5)
            assert row.self_certainty[t] == pytest.approx(-math.log(V) - lp.mean().item(), abs=1e-5)
            assert row.confidence[t] == pytest.approx(-lp.topk(20).values.mean().item(), abs=1e-5)
            # the teacher-forced bfloat16 pass: the same logits up to bfloat16 rounding of the way there
            torch.testing.assert_close(z, ref[t], atol=0.05 * float(ref[t].abs().max()), rtol=0)
            checked += 1
    assert checked == 36

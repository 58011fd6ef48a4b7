"""The engine's search seams (pause at a step separator, fork, a controller's branch decision)
against independent computations: a teacher-forced pass of the model, decode-step accounting, and
the plain engine's own output."""
import pytest
import torch

from strategies.control import DISCARD, Controller
from strategies.engine import Engine, Request
from strategies.generators.discrete import Discrete, DiscreteParams

# The tiny random model emits random bytes: its decoded text is full of U+FFFD (an incomplete
# UTF-8 sequence), which makes a separator that ends a "step" every few tokens.
SEP = "\ufffd"
PROMPTS = ["Hi", "What is two plus two?", "Count: 1 2 3"]


def chat_ids(tok, text):
    s = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return tok(s, add_special_tokens=False)["input_ids"]


def run(tiny, controller=None, n=4, batch_size=6, max_new=30, seed=0, prompts=PROMPTS):
    model, tok = tiny
    eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=batch_size, max_new_tokens=max_new,
                 seed=seed, controller=controller)
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=n) for k, p in enumerate(prompts)]
    return eng, list(eng.run(reqs))


def rows_of(done):
    return [(r.req.key, r.i, r.ids, r.logprob, r.finish) for req in done for r in req.rows]


class ContinueAll(Controller):
    step_sep = SEP

    def __init__(self):
        self.calls = []

    def branch(self, req, paused):
        self.calls.append((req.key, [r.i for r in paused]))
        return []


def test_pausing_rows_that_all_continue_decode_the_same_tokens(tiny):
    """A search controller that continues every paused row: the same rows, tokens and
    log-probabilities as the plain engine (rows resume from their copied keys/values)."""
    _, plain = run(tiny)
    ctl = ContinueAll()
    _, searched = run(tiny, ctl)
    assert ctl.calls, "no row ever paused: the test would show nothing"
    assert any(len(p) > 1 for _, p in ctl.calls)
    a, b = rows_of(plain), rows_of(searched)
    assert [x[:3] + x[4:] for x in a] == [x[:3] + x[4:] for x in b]
    for x, y in zip(a, b):
        assert x[3] == pytest.approx(y[3], abs=1e-4)


class ForkFirst(Controller):
    """At each prompt's first decision: fork its first paused row into 3, discard the rest."""
    step_sep = SEP

    def __init__(self):
        self.forked = {}

    def branch(self, req, paused):
        if req.key in self.forked or not paused:
            return []
        self.forked[req.key] = (paused[0].i, list(paused[0].ids))
        return [(paused[0], 3)] + [(r, DISCARD) for r in paused[1:]] + [
            (r, DISCARD) for r in req.rows if r.finish is not None]


def test_a_forked_rows_next_logits_equal_a_fresh_prefill(tiny):
    model, tok = tiny
    ctl = ForkFirst()
    eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=8, max_new_tokens=30, seed=1,
                 controller=ctl)
    seen = {}   # (key, i) -> logits of the row's first step after the fork
    forward = eng.forward

    def spy(active):
        logits, sig = forward(active)
        for b, r in enumerate(active):
            if r.req.key in ctl.forked and len(r.ids) == len(ctl.forked[r.req.key][1]):
                seen.setdefault((r.req.key, r.i), logits[b].clone())
        return logits, sig

    eng.forward = spy
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=4) for k, p in enumerate(PROMPTS)]
    done = list(eng.run(reqs))
    assert len(ctl.forked) == len(PROMPTS)
    for req in done:
        parent, ids = ctl.forked[req.key]
        assert len(req.rows) == 3 and req.n == 3
        assert {r.i for r in req.rows} == {parent, 4, 5}   # new sample indices after the first 4
        firsts = [seen[(req.key, r.i)] for r in req.rows]
        with torch.no_grad():
            ref = model(torch.tensor([req.prompt_ids + ids])).logits[0, -1, : len(tok)].float()
        for got in firsts:
            torch.testing.assert_close(got, ref, atol=2e-4, rtol=1e-4)
        # the copies continue on their own random streams
        assert len({tuple(r.ids) for r in req.rows}) > 1
        assert all(r.ids[: len(ids)] == ids for r in req.rows)


def test_paused_rows_take_no_decode_steps(tiny):
    ctl = ForkFirst()
    model, tok = tiny
    eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=8, max_new_tokens=30, seed=2,
                 controller=ctl)
    step = eng.step
    decoded = []

    def spy(active):
        assert not any(r.paused for r in active)
        decoded.append(len(active))
        step(active)

    eng.step = spy
    discarded = []
    branch = ctl.branch

    def keep_track(req, paused):
        acts = branch(req, paused)
        discarded.extend(r for r, a in acts if a == DISCARD)
        return acts

    ctl.branch = keep_track
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=4) for k, p in enumerate(PROMPTS)]
    done = list(eng.run(reqs))
    every = [r for req in done for r in req.rows] + discarded
    # each decode step of a row adds exactly one of its own tokens (a fork's earlier ones are its parent's)
    assert sum(decoded) == eng.tokens_generated == sum(len(r.ids) - r.born for r in every)
    assert any(r.step_ends for r in every)


def test_max_steps_lets_the_last_step_run_to_the_end(tiny):
    class Capped(ContinueAll):
        max_steps = 2

    ctl = Capped()
    _, done = run(tiny, ctl)
    assert all(len(r.step_ends) <= 1 for req in done for r in req.rows)
    assert all(r.finish in ("stop", "length") for req in done for r in req.rows)


def test_search_refuses_penalties(tiny):
    from strategies.penalties import Penalties

    model, tok = tiny
    with pytest.raises(ValueError, match="penalties"):
        Engine(model, tok, Discrete(DiscreteParams(1.0)), controller=ContinueAll(),
               penalties=Penalties(repetition=1.2))


@pytest.mark.parametrize("sharing", ["always", "never"])
def test_forked_rows_read_the_shared_prompt_and_match_a_fresh_prefill(tiny, sharing):
    """A resumed or forked row's slot holds only its own continuation: with prefix sharing it
    reads the prompt from its request's shared prefix (the slot's prompt positions are overwritten
    with garbage, so reading them would show; finite, since masked-out positions are still
    multiplied through), without sharing the prompt is copied in first. Either
    way its next logits equal a teacher-forced pass over prompt + its tokens."""
    model, tok = tiny
    ctl = ForkFirst()
    eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=8, max_new_tokens=30, seed=1,
                 controller=ctl)
    if sharing == "always":
        eng.SHARE_MIN_ROWS = 0
    else:
        eng.share_prefix = False
    seen, grouped = {}, []
    forward, shared = eng.forward, eng._shared
    cache = eng.decoder.cache

    def spy_shared(active):
        out = shared(active)
        grouped.append(out is not None)
        return out

    def spy(active):
        for b, r in enumerate(active):
            if r.bare:
                n = r.req.prefix[0][0].shape[1]
                with torch.inference_mode():
                    for t in cache.k + cache.v:
                        t[b, :, :n] = 50.0
        logits, sig = forward(active)
        for b, r in enumerate(active):
            if r.req.key in ctl.forked and len(r.ids) == len(ctl.forked[r.req.key][1]):
                seen.setdefault((r.req.key, r.i), (logits[b].clone(), grouped[-1]))
        return logits, sig

    eng.forward, eng._shared = spy, spy_shared
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=4) for k, p in enumerate(PROMPTS)]
    done = list(eng.run(reqs))
    assert len(seen) == 3 * len(PROMPTS)
    assert all(was_shared == (sharing == "always") for _, was_shared in seen.values())
    for req in done:
        _, ids = ctl.forked[req.key]
        with torch.no_grad():
            ref = model(torch.tensor([req.prompt_ids + ids])).logits[0, -1, : len(tok)].float()
        for r in req.rows:
            torch.testing.assert_close(seen[(req.key, r.i)][0], ref, atol=2e-4, rtol=1e-4)


def test_the_batch_stays_full_while_a_prompts_rows_wait(tiny):
    """While some prompt's rows are paused (waiting for the rest of its step), other prompts'
    rows take the free slots: a step runs below capacity only when no row waits for a slot and
    every request is admitted."""
    model, tok = tiny
    ctl = ContinueAll()
    eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=6, max_new_tokens=24, seed=3,
                 controller=ctl)
    prompts = PROMPTS * 3
    admitted, step, admit = [], eng.step, eng.admit
    filled_around_paused = 0

    def spy_admit(req):
        admitted.append(req.key)
        return admit(req)

    def spy_step(active):
        nonlocal filled_around_paused
        if len(active) < eng.capacity:
            assert not eng._waiting and len(admitted) == len(prompts), "a slot idles while rows wait"
        paused = {id(r.req) for req_rows in reqs for r in req_rows.rows if r.paused}
        if paused and len(active) == eng.capacity:
            filled_around_paused += 1
        step(active)

    eng.step, eng.admit = spy_step, spy_admit
    reqs = [Request(key=k, prompt_ids=chat_ids(tok, p), n=4) for k, p in enumerate(prompts)]
    done = list(eng.run(reqs))
    assert len(done) == len(prompts) and all(r.finish for req in done for r in req.rows)
    assert filled_around_paused > 10


def test_a_searchs_prompt_caches_are_stacked_once_per_admission_and_release(tiny):
    """Prompts leave the batch while their rows are paused and rejoin when they resume; the stack
    of prompt caches that prefix sharing reads changes only when a request is admitted or released
    (a prompt with no row in the batch keeps an empty group), and the rows still decode what the
    plain engine decodes."""
    model, tok = tiny

    def engine(controller):
        eng = Engine(model, tok, Discrete(DiscreteParams(1.0)), batch_size=6, max_new_tokens=30, seed=0,
                     controller=controller)
        eng.SHARE_MIN_ROWS = 0   # share at every step
        return eng

    eng = engine(ContinueAll())
    stacks, empty, share = [], [], eng.decoder.share

    def spy(prefixes, rows, batch):
        key = tuple(map(id, prefixes))
        if not stacks or stacks[-1] != key:
            stacks.append(key)
        empty.append(any(not r for r in rows))
        return share(prefixes, rows, batch)

    eng.decoder.share = spy
    reqs = lambda: [Request(key=k, prompt_ids=chat_ids(tok, p), n=4) for k, p in enumerate(PROMPTS)]
    searched = list(eng.run(reqs()))
    assert len(stacks) <= 2 * len(PROMPTS)
    assert any(empty)   # some step ran while a live prompt had no row in the batch
    plain = list(engine(None).run(reqs()))
    a, b = rows_of(plain), rows_of(searched)
    assert [x[:3] + x[4:] for x in a] == [x[:3] + x[4:] for x in b]
    for x, y in zip(a, b):
        assert x[3] == pytest.approx(y[3], abs=1e-4)

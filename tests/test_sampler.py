"""The sampler's stages against brute-force numpy computations."""
import math

import numpy as np
import pytest
import torch

from strategies.generators.discrete import DiscreteParams
from strategies.sampler import SamplingParams, raw_signals, sample, sample_sorted, truncated_sorted


def stack(settings):
    """SamplingParams from (temperature, top_k, top_p, min_p) tuples, the order brute_truncate takes."""
    return SamplingParams.stack([DiscreteParams(temperature=t, top_k=k, top_p=p, min_p=m)
                                 for t, k, p, m in settings], "cpu")


def brute_truncate(z, T, top_k, top_p, min_p):
    """Reference: the distribution after temperature, top-k, top-p, min-p (dense, by token id)."""
    z = np.asarray(z, dtype=np.float64)
    if T == 0:
        p = np.zeros_like(z)
        p[np.argmax(z)] = 1
        return p
    p = np.exp((z - z.max()) / T)
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros(len(z), bool)
    kk = top_k if top_k > 0 else len(z)
    keep[order[:kk]] = True
    q = np.where(keep, p, 0)
    q /= q.sum()
    mass = 0.0
    for j, tok in enumerate(order):
        if not keep[tok]:
            continue
        if j > 0 and mass >= top_p:
            keep[tok] = False
        mass += q[tok]
    keep &= ~((q < min_p * q.max()) & (np.arange(len(z)) != order[0]))
    q = np.where(keep, q, 0)
    return q / q.sum()


SETTINGS = [(1.0, 0, 1.0, 0.0), (0.7, 5, 1.0, 0.0), (0.6, 30, 0.95, 0.001), (1.3, 0, 0.5, 0.0),
            (0.9, 0, 1.0, 0.2), (0.0, 0, 1.0, 0.0), (0.5, 3, 0.3, 0.1)]


@pytest.mark.parametrize("setting", SETTINGS)
def test_truncation_matches_brute_force(setting):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 50, generator=g) * 3
    sp = stack([setting] * 6)
    probs, ids = truncated_sorted(logits, sp)
    for b in range(6):
        dense = np.zeros(50)
        dense[ids[b].numpy()] = probs[b].double().numpy()
        np.testing.assert_allclose(dense, brute_truncate(logits[b].numpy(), *setting), atol=1e-6)


def test_mixed_settings_per_row():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(len(SETTINGS), 40, generator=g) * 2
    sp = stack(SETTINGS)
    probs, ids = truncated_sorted(logits, sp)
    for b, s in enumerate(SETTINGS):
        dense = np.zeros(40)
        dense[ids[b].numpy()] = probs[b].double().numpy()
        np.testing.assert_allclose(dense, brute_truncate(logits[b].numpy(), *s), atol=1e-6)


def test_inverse_cdf_draw_follows_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    ids = torch.tensor([[7, 3, 9, 1]])
    us = torch.linspace(0.0005, 0.9995, 1000)
    drawn = [int(sample_sorted(probs, ids, u[None])) for u in us]
    counts = {t: drawn.count(t) for t in (7, 3, 9, 1)}
    assert counts == {7: 500, 3: 300, 9: 200, 1: 0}
    # u at the very top can never select a zero-probability token
    assert int(sample_sorted(probs, ids, torch.tensor([0.99999999]))) == 9


def test_sampling_frequencies_match_truncated_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    setting = (0.8, 4, 0.9, 0.0)
    target = brute_truncate(logits[0].numpy(), *setting)
    rng = np.random.default_rng(0)
    n = 20000
    sp = stack([setting] * n)
    toks = sample(logits.expand(n, -1), sp, torch.tensor(rng.random(n)))
    freq = np.bincount(toks.numpy(), minlength=6) / n
    np.testing.assert_allclose(freq, target, atol=0.012)
    # untruncated path too
    sp = stack([(1.0, 0, 1.0, 0.0)] * n)
    toks = sample(logits.expand(n, -1), sp, torch.tensor(rng.random(n)))
    p = torch.softmax(logits[0].double(), -1).numpy()
    np.testing.assert_allclose(np.bincount(toks.numpy(), minlength=6) / n, p, atol=0.012)


def test_greedy_rows_take_the_argmax_in_a_mixed_batch():
    logits = torch.tensor([[0.1, 3.0, 2.9], [0.1, 3.0, 2.9]])
    sp = stack([(0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0)])
    toks = sample(logits, sp, torch.tensor([0.999, 0.999]))
    assert toks[0] == 1 and toks[1] == 2


def test_raw_signals_match_formulas():
    g = torch.Generator().manual_seed(3)
    V = 37
    logits = torch.randn(4, V + 5, generator=g) * 2
    logits[:, V:] = 50.0  # padded rows beyond the vocabulary must be ignored
    s = raw_signals(logits, V)
    for b in range(4):
        z = logits[b, :V].double().numpy()
        lp = z - z.max() - math.log(np.exp(z - z.max()).sum())
        p = np.exp(lp)
        assert s.entropy[b].item() == pytest.approx(-(p * lp).sum(), abs=1e-5)
        kl = (1 / V) * np.sum(np.log((1 / V) / p))  # KL(U || p)
        assert s.self_certainty[b].item() == pytest.approx(kl, abs=1e-4)
        assert s.confidence[b].item() == pytest.approx(-np.sort(lp)[::-1][:20].mean(), abs=1e-5)
        np.testing.assert_allclose(s.logp[b].numpy(), lp, atol=1e-5)


def test_untruncated_draw_is_the_inverse_cdf_in_vocabulary_order():
    """The fast path (no sort, no normalisation) picks exactly the token whose cumulative mass
    first exceeds u, computed independently in float64."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 50, generator=g) * 3
    logits[2, 30:] = float("-inf")  # zero-probability tail: never drawn, even at u -> 1
    temps = torch.tensor([1.0, 0.7, 1.3, 0.5, 1.0, 2.0])
    sp = SamplingParams(temps, torch.zeros(6, dtype=torch.long), torch.ones(6), torch.zeros(6))
    for u in [0.0, 1e-6, 0.2, 0.5, 0.77, 0.999999, 1.0 - 1e-12]:
        uu = torch.full((6,), u, dtype=torch.float64)
        got = sample(logits, sp, uu)
        for b in range(6):
            p = torch.softmax(logits[b].double() / temps[b].double(), -1).numpy()
            cdf = np.cumsum(p)
            want = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), int(np.nonzero(p)[0].max()))
            assert int(got[b]) == want, (b, u)


def test_host_known_sampling_paths_give_the_same_draws():
    """SamplingParams.stack tells `sample` on the host which paths it needs; asking the device
    instead (paths=None) must give the same tokens, for all-greedy, mixed, plain and truncated rows."""
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(4, 40, generator=g) * 2
    u = torch.tensor([0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    for rows in ([(0.0, 0, 1.0, 0.0)] * 4, [(0.0, 0, 1.0, 0.0), (0.7, 0, 1.0, 0.0)] * 2,
                 [(0.8, 0, 1.0, 0.0)] * 4, [(0.8, 5, 0.9, 0.0), (0.0, 0, 1.0, 0.0)] * 2):
        sp = stack(rows)
        asked = SamplingParams(sp.temperature, sp.top_k, sp.top_p, sp.min_p)
        assert sp.which() == asked.which()
        assert torch.equal(sample(logits, sp, u), sample(logits, asked, u))


def test_an_untruncated_draw_from_the_signals_shifted_logits_is_the_same_draw():
    """The sampler may reuse the raw signals' max-shifted logits; the draws must not change."""
    from strategies.sampler import SamplingParams, raw_signals, sample

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 300, generator=g) * 4
    u = torch.rand(6, generator=g, dtype=torch.float64)

    class P:
        top_k, top_p, min_p = 0, 1.0, 0.0

        def __init__(self, t):
            self.temperature = t

    sp = SamplingParams.stack([P(t) for t in (0.7, 1.0, 0.0, 1.3, 0.7, 0.2)], "cpu")
    shifted = raw_signals(logits, 300).shifted
    assert torch.equal(sample(logits, sp, u, shifted), sample(logits, sp, u))
    # and both are the inverse-CDF draw computed here from scratch (greedy row: the argmax)
    for b, t in enumerate((0.7, 1.0, 0.0, 1.3, 0.7, 0.2)):
        got = int(sample(logits, sp, u, shifted)[b])
        if t == 0:
            assert got == int(logits[b].argmax())
            continue
        p = torch.softmax(logits[b].double() / t, -1)
        assert got == int((p.cumsum(-1) <= u[b]).sum())

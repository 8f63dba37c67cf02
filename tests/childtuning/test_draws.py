"""The counter-based F / update-dropout draws and the bit packing."""

import math

import torch

from childtuning.bits import pack_bits, unpack_bits, unpack_range
from childtuning.draws import draw_key, keep_mask


def test_any_subrange_draws_the_same_bits():
    # what a rank owning [start, start + n) computes equals the slice of the whole draw
    full = keep_mask(seed=5, step=17, param_index=3, start=0, numel=10_000, reserve_p=0.3)
    for start, n in [(0, 1), (1, 999), (4096, 5000), (9_999, 1), (123, 7777)]:
        assert torch.equal(keep_mask(5, 17, 3, start, n, 0.3), full[start : start + n])


def test_keys_differ_by_seed_step_and_parameter():
    keys = {draw_key(s, t, j) for s in range(3) for t in range(50) for j in range(20)}
    assert len(keys) == 3 * 50 * 20
    a = keep_mask(1, 0, 0, 0, 4096, 0.5)
    b = keep_mask(1, 1, 0, 0, 4096, 0.5)
    # consecutive steps are independent draws: agreement near 50%, not 100%
    agree = (a == b).float().mean().item()
    assert 0.45 < agree < 0.55


def test_kept_fraction_within_binomial_bound():
    n = 1_000_000
    for p in (0.1, 0.3, 0.9):
        for step in range(3):
            kept = int(keep_mask(42, step, 7, 0, n, p).sum())
            sd = math.sqrt(n * p * (1 - p))
            assert abs(kept - n * p) < 5 * sd, (p, step, kept)


def test_p_one_keeps_everything():
    assert bool(keep_mask(42, 0, 0, 0, 100_000, 1.0).all())


def test_gradient_dropout_is_unbiased():
    # E[g * M / p] = g: the mean over many steps' draws converges to g
    p = 0.3
    g = torch.linspace(-2, 2, 2000)
    acc = torch.zeros_like(g)
    steps = 2000
    for t in range(steps):
        acc += g * keep_mask(3, t, 0, 0, g.numel(), p) / p
    mean = acc / steps
    # per element: sd of g*M/p over one draw is |g| sqrt((1-p)/p); of the mean, / sqrt(steps)
    bound = 5 * g.abs() * math.sqrt((1 - p) / p) / math.sqrt(steps) + 1e-6
    assert bool(((mean - g).abs() <= bound).all())
    # and the spread matches the theory Var = g^2 (1-p)/p
    assert abs((mean - g).pow(2).mean().item() / (g.pow(2).mean().item() * (1 - p) / p / steps) - 1) < 0.2


def test_bits_round_trip():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 1000, 12345):
        m = torch.rand(n, generator=gen) < 0.3
        packed = pack_bits(m)
        assert packed.numel() == (n + 7) // 8
        assert torch.equal(unpack_bits(packed, n), m)
        for start, k in [(0, n), (n // 3, n - n // 3), (n - 1, 1)]:
            assert torch.equal(unpack_range(packed, start, k), m[start : start + k])

"""Baselines: shapes, zero-filled = RSS, CG-SENSE exact when fully sampled, sigpy CS agrees with our
operator (same FFT convention, mask as weights) and beats zero-filling on a simulated scan."""

import numpy as np
import pytest
import torch
from conftest import simulate

from mrdiff.baselines import BASELINES, DEFAULT_LAMBDA, NOISE_LAMBDA, noise_lambda, noise_level
from mrdiff.coils import rss
from mrdiff.fft import ifft2c
from mrdiff.masks import make_mask
from mrdiff.operators import CartesianOperator
from mrdiff.pipeline import method_defaults, search_start


@pytest.fixture(scope="module")
def problem():
    x, maps, k, target = simulate(slices=1, coils=4, H=32, W=32, noise=0.0)
    mask = make_mask("random", (32, 32), 3, 0.25, "f.h5")
    op = CartesianOperator(mask, torch.from_numpy(maps))
    y = torch.from_numpy(k) * mask
    return torch.from_numpy(x), op, y, target


def test_registry_and_shapes(problem):
    _, op, y, _ = problem
    assert set(BASELINES) >= {"zf", "sense", "cs-l1", "cs-tv"}
    for name in ("zf", "sense", "cs-l1", "cs-tv"):
        kw = {"iters": 5} if name.startswith("cs") else {}
        out = BASELINES[name](y, op, **kw)
        assert out.shape == (1, 32, 32) and out.dtype == torch.complex64, name


def test_zero_filled_is_rss(problem):
    _, op, y, _ = problem
    np.testing.assert_allclose(BASELINES["zf"](y, op).abs().numpy(), rss(ifft2c(y)).numpy(), rtol=1e-6)
    single = CartesianOperator(op.mask)
    torch.testing.assert_close(BASELINES["zf"](y[:, :1], single), ifft2c(y[:, 0]))
    # phase from the coil combination: closer to the data than a real-valued RSS image
    zf = BASELINES["zf"](y, op)
    assert float(op.residual(zf, y)) < float(op.residual(zf.abs().to(zf.dtype), y))


def test_sense_fully_sampled_is_exact(problem):
    x, op, y, _ = problem
    full = CartesianOperator(torch.ones(32, dtype=torch.bool), op.maps)
    out = BASELINES["sense"](full.A(x), full, damping=0.0)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["cs-l1", "cs-tv"])
def test_sigpy_cs_is_consistent_with_our_operator(problem, name):
    """With a tiny lambda sigpy solves the least-squares problem of *our* A: residual ~ 0."""
    _, op, y, _ = problem
    out = BASELINES[name](y, op, lamda=1e-7, iters=300)
    assert float(op.residual(out, y)) < 0.02
    # a scrambled FFT convention (no centring) could not fit the data
    shifted = CartesianOperator(torch.roll(op.mask, 5, 0), op.maps)
    assert float(shifted.residual(out, torch.roll(y, 5, -1))) > 0.2


@pytest.mark.parametrize("name", ["sense", "cs-l1", "cs-tv"])
def test_beats_zero_filled(problem, name):
    x, op, y, target = problem
    err = {m: np.linalg.norm(BASELINES[m](y, op).abs().numpy() - target) for m in ("zf", name)}
    assert err[name] < err["zf"]


@pytest.mark.parametrize("name", ["cs-l1", "cs-tv"])
def test_cs_is_a_function_of_its_input(problem, name):
    """sigpy's step size comes from a power iteration with a random start: the same input must still
    give the same output, and the caller's numpy draws must not change."""
    _, op, y, _ = problem
    np.random.seed(7)
    expected = np.random.rand(3)
    np.random.seed(7)
    first = BASELINES[name](y, op, iters=10)
    assert np.array_equal(np.random.rand(3), expected)
    np.random.rand(5)  # another global state: the result must not depend on it
    assert torch.equal(BASELINES[name](y, op, iters=10), first)


def test_single_coil_cs(problem):
    x, op, y, _ = problem
    single = CartesianOperator(op.mask)
    y1 = single.A(x)
    out = BASELINES["cs-l1"](y1, single, lamda=1e-7, iters=200)
    assert float(single.residual(out, y1)) < 0.02


def _noisy(noise: float):
    """A 2-slice, 4-coil 64² scan with white k-space noise ``noise`` per real component, 4x random mask."""
    _, maps, k, _ = simulate(slices=2, coils=4, H=64, W=64, noise=noise)
    mask = make_mask("random", (64, 64), 4, 0.08, "n.h5")
    return torch.from_numpy(k) * mask, CartesianOperator(mask, torch.from_numpy(maps))


def test_noise_level_is_the_noise_on_the_solver_scale():
    """``noise_level`` follows the noise (x4 noise -> about x4) and not the data's units (y x 10 -> the
    same), so the noise-proportional lambda is one number for every scan of a given SNR."""
    y, op = _noisy(0.01)
    level = noise_level(y, op)
    assert level.shape == (2,) and (level > 0).all()
    torch.testing.assert_close(noise_level(10 * y, op), level, rtol=1e-4, atol=0)
    ratio = noise_level(*_noisy(0.04)) / level
    assert ((ratio > 3.2) & (ratio < 4.8)).all(), ratio
    lam = noise_lambda(y, op, NOISE_LAMBDA["cs-l1"])
    assert lam == pytest.approx(NOISE_LAMBDA["cs-l1"] * float(level.median()), rel=1e-2)


def test_auto_search_starts_cs_l1_at_the_noise_proportional_lambda():
    """``--auto`` starts CS-L1's lambda from the scan's noise; CS-TV (no such rule) from its default."""
    y, op = _noisy(0.01)
    start = search_start("cs-l1", y, op)
    assert start["lamda"] == noise_lambda(y, op, NOISE_LAMBDA["cs-l1"]) != DEFAULT_LAMBDA["cs-l1"]
    assert search_start("cs-tv", y, op)["lamda"] == DEFAULT_LAMBDA["cs-tv"]
    assert search_start("sense", y, op) == method_defaults("sense")


def test_no_measurable_noise_keeps_the_default_start():
    """Nothing to read the noise from (all measured samples 0): the search starts at the fixed default,
    not at lambda 0."""
    y, op = _noisy(0.0)
    y = torch.zeros_like(y)
    assert float(noise_level(y, op).max()) == 0.0
    assert search_start("cs-l1", y, op)["lamda"] == DEFAULT_LAMBDA["cs-l1"]

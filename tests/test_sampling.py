"""Schedules, prior steps and the reverse loop against a closed-form Gaussian prior (CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from mrdiff.consistency import REGISTRY
from mrdiff.noise import make_generator
from mrdiff.operators import CartesianOperator
from mrdiff.priors.gaussian import GaussianPrior
from mrdiff.reconstruct import reconstruct
from mrdiff.sampling import batch_noise, ddim_coefficients, reverse_loop, sample_prior
from mrdiff.schedules import (
    SCHEDULES,
    denoising_steps,
    karras,
    make,
    repaint,
    steps_for_nfe,
    truncate,
    vp_alpha_bar,
    vp_sigmas,
)

H = W = 8


def _prior(fourier: bool) -> GaussianPrior:
    g = make_generator(0)
    mean = torch.complex(*(torch.rand(2, H, W, generator=g, dtype=torch.float64)))
    var = 0.2 + torch.rand(H, W, generator=g, dtype=torch.float64)
    return GaussianPrior(mean, var, fourier=fourier)


def _run(prior, y, op, method, nfe, n, first_seed=0):
    gens = [make_generator(first_seed + i) for i in range(n)]
    sigmas = method.schedule(nfe, prior.sigma_min, prior.sigma_max)
    x, sigmas = method.prepare(y, op, sigmas, gens)
    x, used = reverse_loop(prior, x, sigmas, method, y, op, gens)
    return x.to(torch.complex128), used


def _moments(x):
    return x.mean(0), (x.real.var(0) + x.imag.var(0)) / 2


def test_karras_and_vp_schedules():
    s = karras(10, 0.002, 80.0)
    assert s.dtype == torch.float64 and s.shape == (11,) and s[-1] == 0
    assert torch.all(s[1:] < s[:-1]) and math.isclose(s[0], 80.0) and math.isclose(s[-2], 0.002)
    for kind in ("linear", "cosine"):
        abar = vp_alpha_bar(kind, 1000)
        v = vp_sigmas(20, kind)
        assert v.shape == (21,) and v[-1] == 0 and torch.all(v[1:] < v[:-1])
        assert torch.isclose(v[0], ((1 - abar[-1]) / abar[-1]).sqrt())
        assert torch.isclose(v[-2], ((1 - abar[0]) / abar[0]).sqrt())
    assert vp_sigmas(10, "linear")[0] > 100 and vp_sigmas(10, "linear")[-2] < 0.02


def test_method_schedules_by_name():
    from mrdiff.errors import InputError

    for kind in SCHEDULES:
        s = REGISTRY["pocs"](schedule=kind).schedule(10, 0.002, 80.0)
        assert s[-1] == 0 and torch.equal(s, make(kind, 10, 0.002, 80.0))
    assert torch.equal(make("karras", 10, 0.002, 80.0), karras(10, 0.002, 80.0))
    with pytest.raises(InputError, match="unknown schedule"):
        REGISTRY["pocs"](schedule="edm").schedule(10, 0.002, 80.0)


def test_truncate_and_repaint_schedule():
    s = karras(10, 0.01, 10.0)
    t = truncate(s, 1.0)
    assert t[0] == 1.0 and torch.all(t[1:] < 1.0) and t[-1] == 0 and len(t) == int((s < 1.0).sum()) + 1
    with pytest.raises(ValueError):
        truncate(s, 0.0)
    r = repaint(s, jump_length=3, resample=2)
    assert r[0] == s[0] and r[-1] == 0
    assert int((r[1:] > r[:-1]).sum()) > 0  # rises re-noise
    assert denoising_steps(r) == 10 + 3 * len(range(3, 10, 3))  # each jump re-walks 3 steps once more
    assert torch.equal(repaint(s, 3, 1), s)


def test_nfe_mapping():
    assert steps_for_nfe(50, "ddim") == 50 and steps_for_nfe(99, "heun") == 50
    with pytest.raises(ValueError):
        steps_for_nfe(0, "ddim")


def test_ddim_coefficients_match_ddpm_posterior():
    s, sn = 2.0, 1.5
    down, up = ddim_coefficients(s, sn, 1.0)
    assert math.isclose(up**2, sn**2 * (s**2 - sn**2) / s**2)
    assert math.isclose(down, sn**2 / s)  # mean x0 + (sn^2/s^2)(x - x0)
    down0, up0 = ddim_coefficients(s, sn, 0.0)
    assert up0 == 0 and math.isclose(down0, sn)


@pytest.mark.parametrize("fourier", [False, True])
def test_heun_unconditional_matches_prior(fourier):
    """``sample_prior`` (the sampler of `mrdiff sample` and of training previews) draws from the prior."""
    prior = _prior(fourier)
    n = 1000
    x = sample_prior(prior, (H, W), 40, [make_generator(i) for i in range(n)], "heun").to(torch.complex128)
    mean, var = _moments(x)
    pvar = prior.covariance().diagonal().real.reshape(H, W)
    assert float(((mean - prior.mean).abs() / (pvar / n).sqrt()).max()) < 4.5
    ratio = var / pvar
    assert abs(float(ratio.mean()) - 1) < 0.04 and float((ratio - 1).abs().max()) < 0.15


def test_ancestral_unconditional_variance():
    """DDPM ancestral is first-order accurate: at 100 steps the variance is within ~15%."""
    prior = _prior(False)
    n = 500
    x = sample_prior(prior, (H, W), 100, [make_generator(i) for i in range(n)], "ancestral")
    ratio = _moments(x.to(torch.complex128))[1] / prior.var
    assert 0.8 < float(ratio.mean()) < 1.05


def test_unconditional_is_pocs_without_data():
    """The unconditional method is the loop's prior step alone: POCS with lam = 0 on the same noise
    (noise-free measurement: sigma_next = 0 throughout, i.e. clean=True) gives the same samples."""
    prior = _prior(True)
    gens = lambda: [make_generator(i) for i in range(4)]  # noqa: E731
    x = sample_prior(prior, (H, W), 6, gens(), "ddim")
    op = CartesianOperator(torch.ones(W, dtype=torch.bool))
    y = torch.zeros(4, 1, H, W, dtype=torch.complex64)
    method = REGISTRY["pocs"](lam=0.0, clean=True, sampler="ddim")
    sigmas = karras(6, prior.sigma_min, prior.sigma_max)
    g = gens()
    start = batch_noise(torch.zeros(4, H, W, dtype=torch.complex64), g) * sigmas[0].item()
    z, used = reverse_loop(prior, start, sigmas, method, y, op, g)
    assert used == 6
    torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name,params,nfe",
    [("pocs", {"clean": True, "sampler": "heun"}, 79), ("dds", {"sampler": "heun", "cg_iters": 3}, 79)],
)
def test_posterior_matches_closed_form(name, params, nfe):
    """Fourier-diagonal prior, single-coil mask, noiseless y: the exact posterior keeps the prior on
    unmeasured frequencies and y on measured ones; the sampler must reproduce its mean and variance."""
    prior = _prior(True)
    mask = torch.zeros(W, dtype=torch.bool)
    mask[[1, 3, 4, 6]] = True
    op = CartesianOperator(mask)
    x_true = prior.sample(1, make_generator(7)).to(torch.complex64)
    y1 = op.A(x_true)
    post_mean, post_var = prior.posterior(y1, op)
    n = 1000
    x, _ = _run(prior, y1.expand(n, -1, -1, -1).clone(), op, REGISTRY[name](**params), nfe, n)
    mean, var = _moments(x)
    assert float(((mean - post_mean[0]).abs() / (post_var[0] / n).sqrt()).max()) < 4.5
    ratio = var / post_var[0]
    assert abs(float(ratio.mean()) - 1) < 0.05 and float((ratio - 1).abs().max()) < 0.2
    assert float(post_var.mean()) < 0.8 * float(prior.covariance().diagonal().real.mean())


def _problem(B=3):
    prior = _prior(True)
    mask = torch.zeros(W, dtype=torch.bool)
    mask[[1, 3, 4, 6]] = True
    op = CartesianOperator(mask)
    x = prior.sample(B, make_generator(3)).to(torch.complex64)
    return prior, op, op.A(x)


def test_same_seed_same_output_and_batch_independence():
    prior, op, y = _problem(3)

    def run(idx, seeds):
        gens = [make_generator(s) for s in seeds]
        return reconstruct(y[idx], op, "pocs", prior, nfe=12, samples=2, generators=gens).mean

    a = run([0, 1, 2], [10, 11, 12])
    assert torch.equal(a, run([0, 1, 2], [10, 11, 12]))
    assert not torch.allclose(a, run([0, 1, 2], [20, 21, 22]))
    alone = run([1], [11])
    assert torch.allclose(a[1:2], alone, atol=1e-6, rtol=1e-5)
    swapped = run([2, 1], [12, 11])
    assert torch.allclose(a[1], swapped[1], atol=1e-6, rtol=1e-5)


def test_reconstruct_outputs_and_scale_equivariance():
    prior, op, y = _problem(2)
    gens = lambda: [make_generator(5), make_generator(6)]  # noqa: E731
    r = reconstruct(y, op, "dds", prior, nfe=10, samples=3, generators=gens())
    assert r.mean.shape == (2, H, W) and r.mean.dtype == torch.complex64
    assert r.std.shape == (2, H, W) and r.std.dtype == torch.float32 and float(r.std.min()) >= 0
    assert float(r.std.mean()) > 0 and r.residual.shape == (2,) and r.nfe == 10
    r2 = reconstruct(1000.0 * y, op, "dds", prior, nfe=10, samples=3, generators=gens())
    assert torch.allclose(r2.mean, 1000.0 * r.mean, rtol=1e-3, atol=1e-2)
    assert torch.allclose(r2.std, 1000.0 * r.std, rtol=1e-3, atol=1e-2)
    one = reconstruct(y, op, "dds", prior, nfe=10, samples=1, generators=gens())
    assert float(one.std.abs().max()) == 0


def test_reconstruct_rejects_bad_input():
    from mrdiff.errors import InputError

    prior, op, y = _problem(2)
    with pytest.raises(InputError, match="unknown method"):
        reconstruct(y, op, "nope", prior, generators=[make_generator(0)] * 2)
    with pytest.raises(InputError, match="one generator per slice"):
        reconstruct(y, op, "pocs", prior, generators=[make_generator(0)])
    with pytest.raises(InputError, match="unknown parameter"):
        reconstruct(y, op, "pocs", prior, generators=[make_generator(0)] * 2, params={"zeta": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_shapes_and_consistency():
    prior, op, y = _problem(2)
    op_cuda = CartesianOperator(op.mask.cuda())
    gens = [make_generator(s, "cuda") for s in (1, 2)]
    r = reconstruct(y.cuda(), op_cuda, "pocs", prior, nfe=10, samples=2, generators=gens)
    assert r.mean.is_cuda and r.mean.shape == (2, H, W) and float(r.residual.max()) < 1e-4


def test_gaussian_posterior_with_per_item_masks_and_coils():
    """The exact posterior mean of noiseless data fits each item's own measurements (``op.item``)."""
    from mrdiff.coils import normalize_maps

    g = make_generator(4)
    prior = GaussianPrior(torch.zeros(4, 4, dtype=torch.complex128), 0.5 + torch.rand(4, 4, generator=g))
    mask = torch.rand(2, 1, 4, 4, generator=g) < 0.5
    maps = normalize_maps(torch.randn(2, 2, 4, 4, generator=g, dtype=torch.complex128))
    op = CartesianOperator(mask, maps)
    y = op.A(prior.sample(2, g))
    mean, var = prior.posterior(y, op)
    torch.testing.assert_close(op.A(mean), y, atol=1e-8, rtol=0)
    assert float(var.max()) <= float(prior.var.max()) and float(var.min()) >= 0

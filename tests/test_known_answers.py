"""Checks against answers known in closed form: MCG/DPS gradients, per-item masks, ILVR's low-pass
region, complex noise variance, the training augmentations."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mrdiff.coils import normalize_maps
from mrdiff.config import DataConfig
from mrdiff.consistency import REGISTRY
from mrdiff.consistency.ilvr import lowpass_region
from mrdiff.consistency.mcg import residual_gradient
from mrdiff.data import augment, remap_intensity
from mrdiff.fft import fft2c
from mrdiff.noise import complex_randn, make_generator
from mrdiff.operators import CartesianOperator
from mrdiff.sampling import Step
from mrdiff.scaling import image_scale

B, C, H, W = 3, 2, 12, 10


def _rand(shape, seed, dtype=torch.complex128):
    return complex_randn(shape, make_generator(seed), dtype=dtype)


def _per_item_op(coils: bool, dtype=torch.complex128) -> CartesianOperator:
    """A different random 2-D mask for each item, ``(B, 1, H, W)``."""
    mask = torch.rand(B, 1, H, W, generator=make_generator(1)) < 0.4
    maps = normalize_maps(_rand((B, C, H, W), 2, dtype)) if coils else None
    return CartesianOperator(mask, maps)


def _linear_step(op: CartesianOperator, sigma: float = 0.5):
    """A step with the linear denoiser ``D(x) = x / (1 + sigma^2)`` (the posterior mean of a unit
    complex Gaussian prior), ``x`` a leaf requiring grad; returns the step, ``y`` and the factor."""
    c = 1 / (1 + sigma**2)
    x = _rand((B, H, W), 3).requires_grad_(True)
    y = op.A(_rand((B, H, W), 4))
    x0 = c * x
    return Step(0, x, sigma, 0.3, x0, x0.detach() + 0.1, (x - x0) / sigma), y, c


@pytest.mark.parametrize("coils", [False, True])
def test_residual_gradient_equals_the_analytic_gradient(coils):
    """``grad_x ||y - A c x||^2 = -2 c A^H (y - A c x)`` (torch's convention for real losses of
    complex inputs: d/dRe + i d/dIm), and DPS's step is ``x_next - zeta / r * grad``."""
    op = _per_item_op(coils)
    step, y, c = _linear_step(op)
    x = step.x.detach()
    grad, r = residual_gradient(step, y, op)
    torch.testing.assert_close(grad, -2 * c * op.AH(y - op.A(c * x)))
    torch.testing.assert_close(r, (y - op.A(c * x)).flatten(1).norm(dim=1))
    step, y, c = _linear_step(op)
    out = REGISTRY["dps"](zeta=0.7)(step, y, op, [make_generator(i) for i in range(B)])
    expected = step.x_next - 0.7 / r.reshape(-1, 1, 1) * grad
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("coils", [False, True])
def test_per_item_masks_adjoint_and_projection(coils):
    op = _per_item_op(coils)
    ys = (B, C if coils else 1, H, W)
    x, y = _rand((B, H, W), 5), _rand(ys, 6)
    lhs, rhs = (op.A(x).conj() * y).sum(), (x.conj() * op.AH(y)).sum()
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    for b in range(B):  # item b sees its own mask only
        one = CartesianOperator(op.mask[b : b + 1], None if op.maps is None else op.maps[b : b + 1])
        torch.testing.assert_close(op.A(x)[b : b + 1], one.A(x[b : b + 1]))
    k = _rand(ys, 7)
    yk = op.A(_rand((B, H, W), 8))
    p = op.project_kspace(k, yk)
    m = op.mask.expand(ys)
    assert torch.equal(p[m], yk[m]) and torch.equal(p[~m], k[~m])
    assert torch.equal(op.project_kspace(p, yk), p)
    if not coils:  # single coil: the image projection is exact on each item's mask
        z = op.project(_rand((B, H, W), 9), yk)
        torch.testing.assert_close(op.A(z), yk)


def test_ilvr_low_pass_region():
    """The region is the central box of 1/factor of the frequencies per axis; ILVR imposes the
    measured data there and leaves the rest of the proposal's k-space alone."""
    region = lowpass_region((16, 20), 4.0)
    rows, cols = region.any(1).nonzero().flatten(), region.any(0).nonzero().flatten()
    assert rows.tolist() == list(range(6, 11)) and cols.tolist() == list(range(8, 13))
    assert region.sum() == 5 * 5 and lowpass_region((16, 20), 1.0).all()
    mask = torch.zeros(16, 20, dtype=torch.bool)
    mask[:, ::2] = True
    op = CartesianOperator(mask)
    y = op.A(_rand((2, 16, 20), 10, torch.complex64))
    proposal = _rand((2, 16, 20), 11, torch.complex64)
    step = Step(0, proposal, 1.0, 0.0, proposal, proposal, proposal)  # sigma_next = 0: y itself
    out = REGISTRY["ilvr"](factor=4.0)(step, y, op, [make_generator(0), make_generator(1)])
    k_out, k_in, inside = fft2c(out), fft2c(proposal), region & mask
    torch.testing.assert_close(k_out[:, inside], y[:, 0][:, inside])
    torch.testing.assert_close(k_out[:, ~inside], k_in[:, ~inside])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_randn_has_unit_variance_per_real_component(dtype):
    z = complex_randn((400_000,), make_generator(12), dtype=dtype)
    assert z.dtype == dtype
    assert abs(float(z.real.var()) - 1) < 0.01 and abs(float(z.imag.var()) - 1) < 0.01
    assert abs(float((z.real * z.imag).mean())) < 0.01 and abs(float(z.abs().pow(2).mean()) - 2) < 0.02
    assert abs(float(z.real.mean())) < 0.01 and abs(float(z.imag.mean())) < 0.01


def test_remap_intensity_is_piecewise_linear_through_its_knots():
    knots = 5
    u = torch.linspace(0.0, 1.2, knots)
    for monotone in (True, False):
        v = remap_intensity(u[None], make_generator(13), knots, monotone)[0]
        mid = (u[:-1] + u[1:]) / 2
        out = remap_intensity(mid[None], make_generator(13), knots, monotone)[0]
        torch.testing.assert_close(out, (v[:-1] + v[1:]) / 2)  # linear between knots
        assert v[0] == 0 and bool((v[1:] >= 0.1).all() and (v[1:] <= 1.0).all())
        above = remap_intensity(torch.tensor([[2.0]]), make_generator(13), knots, monotone)[0, 0]
        torch.testing.assert_close(above, v[-1] + 0.8 * v[-1])  # beyond 1.2: continued with slope v[-1]
        if monotone:
            assert bool((v[1:] >= v[:-1]).all())
    inversions = [remap_intensity(u[None], make_generator(s), knots, False)[0] for s in range(20)]
    assert any(bool((w[1:] < w[:-1]).any()) for w in inversions)


OFF = DataConfig(flips=False, rot90=False, gamma=(1.0, 1.0), remap_prob=0.0, bias_field=0.0, phase_prob=0.0)


def test_augment_on_known_inputs():
    """All off: the image divided by its scale. Gamma 2: the magnitude squared, phase kept. Flips and
    rotations: one of the 8 symmetries of the square, each reached. Phase only, strength 0: a
    constant phase factor."""
    x = _rand((8, 8), 14, torch.complex64)
    xn = x / image_scale(x[None])[0]
    base = augment(x, OFF, make_generator(0))
    torch.testing.assert_close(base, xn)
    sq = augment(x, replace(OFF, gamma=(2.0, 2.0)), make_generator(0))
    torch.testing.assert_close(sq.abs(), xn.abs() ** 2)
    torch.testing.assert_close(sq.angle(), xn.angle())
    variants = []
    for flip_w in (False, True):
        for flip_h in (False, True):
            f = base.flip(-1) if flip_w else base
            f = f.flip(-2) if flip_h else f
            variants += [torch.rot90(f, k, dims=(-2, -1)) for k in range(4)]
    seen = set()
    for seed in range(60):
        out = augment(x, replace(OFF, flips=True, rot90=True), make_generator(seed))
        seen |= {i for i, v in enumerate(variants) if torch.equal(out, v)}
        assert any(torch.equal(out, v) for v in variants)
    assert len({tuple(variants[i].flatten().tolist()) for i in seen}) == 8
    rot = augment(x, replace(OFF, phase_prob=1.0, phase_strength=0.0), make_generator(3))
    factor = rot / xn
    torch.testing.assert_close(factor.abs(), torch.ones_like(factor.abs()))
    torch.testing.assert_close(factor, factor[0, 0].expand_as(factor))

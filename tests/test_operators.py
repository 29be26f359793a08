"""Operators: linearity, exact adjoints (complex128), projections exact and idempotent, CG."""

import pytest
import torch

from mrdiff.coils import normalize_maps
from mrdiff.operators import CartesianOperator, conjugate_gradient


def _rand(shape, seed, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    ).to(dtype)


def _ops():
    B, C, H, W = 2, 4, 12, 10
    g = torch.Generator().manual_seed(0)
    mask_1d = torch.rand(W, generator=g) < 0.5
    mask_2d = torch.rand(H, W, generator=g) < 0.4
    mask_item = torch.rand(B, 1, H, W, generator=g) < 0.4  # one mask per batch item
    maps = normalize_maps(_rand((B, C, H, W), 3))
    return {
        "single-1d": CartesianOperator(mask_1d),
        "single-2d": CartesianOperator(mask_2d),
        "single-item": CartesianOperator(mask_item),
        "sense-1d": CartesianOperator(mask_1d, maps),
        "sense-2d": CartesianOperator(mask_2d, maps),
        "sense-item": CartesianOperator(mask_item, maps),
    }


OPS = _ops()


def _shapes(op):
    return (2, 12, 10), (2, op.num_coils, 12, 10)


@pytest.mark.parametrize("name", OPS)
def test_linearity(name):
    op = OPS[name]
    xs, _ = _shapes(op)
    x1, x2 = _rand(xs, 1), _rand(xs, 2)
    a, b = 0.7 - 0.2j, -1.3 + 0.5j
    torch.testing.assert_close(op.A(a * x1 + b * x2), a * op.A(x1) + b * op.A(x2))


@pytest.mark.parametrize("name", OPS)
def test_adjoint(name):
    op = OPS[name]
    xs, ys = _shapes(op)
    x, y = _rand(xs, 4), _rand(ys, 5)
    lhs = (op.A(x).conj() * y).sum()
    rhs = (x.conj() * op.AH(y)).sum()
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    # coils/combine are adjoint too
    yc = _rand(ys, 6)
    assert abs((op.coils(x).conj() * yc).sum() - (x.conj() * op.combine(yc)).sum()) < 1e-10 * yc.abs().sum()


@pytest.mark.parametrize("name", OPS)
def test_project_kspace_exact_and_idempotent(name):
    op = OPS[name]
    _, ys = _shapes(op)
    k, y = _rand(ys, 7), _rand(ys, 8)
    p = op.project_kspace(k, y)
    m = torch.broadcast_to(op.mask, ys)
    assert torch.equal(p[m], y[m])
    assert torch.equal(p[~m], k[~m])
    assert torch.equal(op.project_kspace(p, y), p)


@pytest.mark.parametrize("name", OPS)
def test_project_kspace_weight_and_region(name):
    op = OPS[name]
    _, ys = _shapes(op)
    k, y = _rand(ys, 7), _rand(ys, 8)
    region = torch.zeros(12, 10, dtype=torch.bool)
    region[3:9, 2:7] = True
    m = torch.broadcast_to(op.mask & region, ys)
    p = op.project_kspace(k, y, region=region)
    assert torch.equal(p[m], y[m]) and torch.equal(p[~m], k[~m])
    p = op.project_kspace(k, y, lam=0.3)
    m = torch.broadcast_to(op.mask, ys)
    torch.testing.assert_close(p[m], 0.7 * k[m] + 0.3 * y[m], atol=1e-12, rtol=0)
    assert torch.equal(p[~m], k[~m])


@pytest.mark.parametrize("name", OPS)
def test_project_is_coil_kspace_replacement(name):
    """``project`` is ``x + A^H (y - A x)`` (measured coil k-space replaced; coils: S^H S = I)."""
    op = OPS[name]
    xs, ys = _shapes(op)
    x, y = _rand(xs, 9), op.A(_rand(xs, 10))
    support = 1.0 if op.maps is None else (op.maps.abs() ** 2).sum(1)
    torch.testing.assert_close(op.project(x, y), x * support + op.AH(y - op.A(x)), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["single-1d", "single-2d", "single-item"])
def test_single_coil_project_exact_and_idempotent(name):
    op = OPS[name]
    xs, _ = _shapes(op)
    x, x_true = _rand(xs, 9), _rand(xs, 10)
    y = op.A(x_true)
    p = op.project(x, y)
    torch.testing.assert_close(op.A(p), y, atol=1e-12, rtol=0)
    torch.testing.assert_close(op.project(p, y), p, atol=1e-12, rtol=0)
    assert torch.all(op.residual(p, y) < 1e-12)
    assert torch.all(op.residual(x, y) > 0.1)


@pytest.mark.parametrize("name", OPS)
def test_item_and_repeat_views(name):
    op = OPS[name]
    xs, ys = _shapes(op)
    x, y = _rand(xs, 14), _rand(ys, 15)
    exact = dict(atol=0, rtol=0)
    for b in range(xs[0]):
        one = op.item(b)
        torch.testing.assert_close(one.A(x[b : b + 1]), op.A(x)[b : b + 1], **exact)
        torch.testing.assert_close(one.project(x[b : b + 1], y[b : b + 1]), op.project(x, y)[b : b + 1])
    rep, x3, y3 = op.repeat(3), x.repeat_interleave(3, 0), y.repeat_interleave(3, 0)
    torch.testing.assert_close(rep.A(x3), op.A(x).repeat_interleave(3, 0), **exact)
    torch.testing.assert_close(rep.AH(y3), op.AH(y).repeat_interleave(3, 0), **exact)
    assert op.repeat(1) is op


def test_sense_project_reduces_residual():
    op = OPS["sense-1d"]
    x_true, x = _rand((2, 12, 10), 11), _rand((2, 12, 10), 12)
    y = op.A(x_true)
    assert torch.all(op.residual(op.project(x, y), y) < op.residual(x, y))


def test_mask_not_aliased():
    mask = torch.ones(10, dtype=torch.bool)
    op = CartesianOperator(mask)
    mask[:] = False
    assert bool(op.mask.all())


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    n = 8
    M = torch.randn(2, n, n, generator=g, dtype=torch.float64)
    N = M @ M.transpose(1, 2) + n * torch.eye(n, dtype=torch.float64)
    x_true = torch.randn(2, n, generator=g, dtype=torch.float64)
    rhs = (N @ x_true[..., None])[..., 0]

    def apply(v):
        return (N @ v[..., None])[..., 0]

    x = conjugate_gradient(apply, rhs, iters=50, tol=1e-12)
    torch.testing.assert_close(x, x_true, atol=1e-8, rtol=0)


def test_cg_sense_recovers_fully_sampled_image():
    op = CartesianOperator(torch.ones(10, dtype=torch.bool), OPS["sense-1d"].maps)
    x_true = _rand((2, 12, 10), 13) * (op.maps.abs().sum(1) > 0)
    x = conjugate_gradient(op.normal, op.AH(op.A(x_true)), iters=20, tol=1e-12)
    torch.testing.assert_close(x, x_true, atol=1e-8, rtol=0)

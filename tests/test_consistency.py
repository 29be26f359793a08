"""Every registered consistency method on a small Gaussian-prior problem (CPU, seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from mrdiff.consistency import REGISTRY
from mrdiff.consistency.base import data_weight
from mrdiff.errors import InputError
from mrdiff.masks import make_mask
from mrdiff.noise import complex_randn, kspace_noise_sigma, make_generator
from mrdiff.operators import CartesianOperator
from mrdiff.priors.gaussian import GaussianPrior
from mrdiff.reconstruct import estimate_scale, reconstruct
from mrdiff.sampling import reverse_loop
from mrdiff.schedules import karras

H = W = 16
NFE = 12
EXACT = ("pocs", "ccdf", "repaint")  # exactly consistent on the mask (single-coil, noiseless y)
PARAMS = {"dps": {"zeta": 1.0}}  # DPS's default step is tuned for 128 x 128 images, not 16 x 16


def _prior() -> GaussianPrior:
    ky = (torch.arange(H) - H // 2).double()[:, None]
    kx = (torch.arange(W) - W // 2).double()[None, :]
    return GaussianPrior(
        torch.full((H, W), 0.2 + 0.1j, dtype=torch.complex128), 4.0 / (1 + ky**2 + kx**2), True
    )


def _mask() -> torch.Tensor:
    mask = torch.zeros(W, dtype=torch.bool)
    mask[::3] = True
    mask[W // 2 - 2 : W // 2 + 2] = True
    return mask


def _maps(B: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    m = torch.stack([torch.exp(-((xx - 0.7) ** 2)) * (1 + 0.3j * yy), torch.exp(-((xx + 0.7) ** 2)) + 0j])
    m = m / (m.abs() ** 2).sum(0).sqrt()
    return m.to(torch.complex64).expand(B, -1, -1, -1).clone()


def _problem(coils: bool, B: int = 2):
    prior = _prior()
    op = CartesianOperator(_mask(), _maps(B) if coils else None)
    x = prior.sample(B, make_generator(3)).to(torch.complex64)
    return prior, op, op.A(x), x


def _gens(B: int, base: int = 0):
    return [make_generator(base + i) for i in range(B)]


def _unconditional(prior, op, y):
    """The same prior walk with no data term (POCS with lam = 0), on the scale of ``y``."""
    m = REGISTRY["pocs"](lam=0.0)
    s = estimate_scale(y, op)[:, None, None, None]
    gens = _gens(y.shape[0])
    x, sig = m.prepare(y / s, op, m.schedule(NFE, prior.sigma_min, prior.sigma_max), gens)
    x, _ = reverse_loop(prior, x, sig, m, y / s, op, gens)
    return x * s[:, :, 0]


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("coils", [False, True])
def test_shapes_dtypes_and_residual_decrease(name, coils):
    prior, op, y, _ = _problem(coils)
    res = reconstruct(
        y, op, name, prior, nfe=NFE, generators=_gens(2), init=op.AH(y), params=PARAMS.get(name)
    )
    assert res.mean.shape == (2, H, W) and res.mean.dtype == torch.complex64
    assert res.std.shape == (2, H, W) and res.residual.shape == (2,)
    assert 1 <= res.nfe <= NFE and torch.isfinite(res.mean).all()
    start = op.residual(_unconditional(prior, op, y), y)
    assert torch.all(res.residual < 0.7 * start), (res.residual, start)


@pytest.mark.parametrize("name", EXACT)
def test_exact_consistency_on_mask(name):
    prior, op, y, _ = _problem(False)
    res = reconstruct(y, op, name, prior, nfe=NFE, generators=_gens(2), init=op.AH(y))
    assert float(res.residual.max()) < 1e-5
    clean = reconstruct(y, op, "pocs", prior, nfe=NFE, generators=_gens(2), params={"clean": True})
    assert float(clean.residual.max()) < 1e-5


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_same_seed_identical_and_batch_independent(name):
    prior, op, y, _ = _problem(True, B=2)
    init = op.AH(y)
    a = reconstruct(y, op, name, prior, nfe=6, generators=_gens(2), init=init)
    b = reconstruct(y, op, name, prior, nfe=6, generators=_gens(2), init=init)
    assert torch.equal(a.mean, b.mean)
    op1 = CartesianOperator(_mask(), _maps(1))
    one = reconstruct(y[1:], op1, name, prior, nfe=6, generators=_gens(1, base=1), init=init[1:])
    assert torch.allclose(one.mean, a.mean[1:], rtol=1e-4, atol=1e-5)


class _GradSpy:
    """The Gaussian prior, recording whether autograd was on at each call."""

    def __init__(self, prior):
        self.prior, self.grad = prior, []
        self.sigma_min, self.sigma_max = prior.sigma_min, prior.sigma_max

    def __call__(self, x, sigma, *args):
        self.grad.append(torch.is_grad_enabled())
        return self.prior(x, sigma)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_loop_does_what_methods_declare(name):
    """``needs_grad``: the denoiser runs under autograd for exactly those methods (MCG, DPS);
    ``needs_init``: the result depends on ``init`` for exactly those (CCDF)."""
    prior, op, y, x = _problem(False)
    spy = _GradSpy(prior)
    a = reconstruct(y, op, name, spy, nfe=6, generators=_gens(2), init=x, params=PARAMS.get(name))
    assert set(spy.grad) == {REGISTRY[name].needs_grad}
    b = reconstruct(y, op, name, prior, nfe=6, generators=_gens(2), init=0 * x, params=PARAMS.get(name))
    assert torch.equal(a.mean, b.mean) != REGISTRY[name].needs_init


def test_ccdf_starts_at_init_plus_sigma_t0_noise_and_spends_budget_below_t0():
    """The start is ``init + sigma_t0 z`` (RMS distance sigma_t0 sqrt(2), sigma per real component);
    a CCDF that ignored ``init`` (10 CG-SENSE steps instead) would start ~1 away."""
    prior, op, y, x = _problem(False)
    m = REGISTRY["ccdf"](sigma_t0=0.05)
    sig = m.schedule(10, prior.sigma_min, prior.sigma_max)
    assert abs(float(sig[0]) - 0.05) < 1e-12 and len(sig) == 11 and sig[-1] == 0
    start, _ = m.prepare(y, op, sig, _gens(2), init=x)
    rms = float((start - x).abs().pow(2).mean().sqrt())
    assert abs(rms / (0.05 * 2**0.5) - 1) < 0.15
    ignored, _ = m.prepare(y, op, sig, _gens(2), init=None)
    assert float((ignored - x).abs().pow(2).mean().sqrt()) > 5 * rms  # the bound above can tell them apart


def test_repaint_and_heun_respect_nfe_budget():
    prior, op, y, _ = _problem(False)
    runs = [("repaint", {"jump_length": 3, "resample": 2}), ("pocs", {"sampler": "heun"})]
    runs.append(("dds", {"schedule": "vp-cosine"}))
    for name, params in runs:
        res = reconstruct(y, op, name, prior, nfe=15, generators=_gens(2), params=params)
        assert 12 <= res.nfe <= 15, (name, res.nfe)


def test_parameters_are_checked_and_coerced():
    with pytest.raises(InputError, match="unknown parameter"):
        REGISTRY["dds"](zeta=1.0)
    with pytest.raises(InputError, match="cannot read"):
        REGISTRY["dds"](cg_iters="many")
    m = REGISTRY["dds"](cg_iters="3", eta="0.5", sampler="ddim")
    assert m.params["cg_iters"] == 3 and m.eta == 0.5
    with pytest.raises(TypeError):
        m.params["eta"] = 1.0  # immutable after construction
    with pytest.raises(InputError, match="noise must be >= 0"):
        REGISTRY["ccdf"](noise=-1)
    assert REGISTRY["pocs"](noise="2").params["noise"] == 2.0 and "noise" not in REGISTRY["dps"]().params


@pytest.mark.parametrize("kind", ["random", "poisson"])
def test_kspace_noise_sigma_reads_the_outermost_measured_samples(kind):
    g = make_generator(1)
    y = 0.3 * complex_randn((2, 4, 64, 64), g)
    y[:, :, 24:40, 24:40] += 50.0  # signal at the centre is not counted
    mask = make_mask(kind, (64, 64), 4, 0.08, "noise.h5")
    est = kspace_noise_sigma(y * mask)
    assert torch.allclose(est, torch.full((2,), 0.3, dtype=est.dtype), rtol=0.1), est
    assert torch.equal(kspace_noise_sigma(0 * y), torch.zeros(2, dtype=est.dtype))  # nothing measured


def test_kspace_noise_sigma_sees_past_signal_that_spans_few_coil_directions():
    g = make_generator(2)
    field = 5.0 * complex_randn((2, 2, 64, 64), g)  # strong signal everywhere, even at the edge,
    mixing = complex_randn((8, 2), g)  # but in 2 of 8 coil directions (smooth maps do this)
    y = torch.einsum("cr,brhw->bchw", mixing, field) + 0.3 * complex_randn((2, 8, 64, 64), g)
    mask = make_mask("poisson", (64, 64), 4, 0.08, "noise.h5")
    est = kspace_noise_sigma(y * mask)
    assert torch.allclose(est, torch.full((2,), 0.3, dtype=est.dtype), rtol=0.1), est
    assert (kspace_noise_sigma(y * mask, virtual_coils=False) > 1.0).all()  # the plain MAD reads the signal
    one = y[:, :1] * mask  # one coil: its only virtual coil is itself
    assert torch.allclose(kspace_noise_sigma(one), kspace_noise_sigma(one, virtual_coils=False))


def test_data_weight_sums_to_the_same_below_the_noise_whatever_the_schedule():
    sigma_y = torch.tensor([0.0, 0.5])
    assert data_weight(2.0, 1.0, sigma_y).tolist() == [1.0, 1.0]  # above the noise: replace
    sums = []
    for n in (20, 200, 2000):
        s = karras(n, 0.002, 0.5).tolist()
        sums.append(sum(float(data_weight(a, b, sigma_y[1:])) for a, b in zip(s[:-1], s[1:])))
    assert max(sums) - min(sums) < 0.05 and abs(sums[-1] - math.log(2)) < 0.05, sums
    y = torch.ones(2, 1, 4, 4, dtype=torch.complex64)
    op = CartesianOperator(torch.ones(4, dtype=torch.bool))
    k = op.project_kspace(torch.zeros_like(y), y, torch.tensor([1.0, 0.25]))
    assert torch.allclose(k[:, 0, 0, 0].real, torch.tensor([1.0, 0.25]))  # one weight per item


@pytest.mark.parametrize("name", ["pocs", "ccdf", "dds"])
def test_noise_aware_data_step_does_not_fit_the_measurement_noise(name):
    """Noisy 2-coil y and a long schedule (NFE 200). Replacing the measured k-space at every step
    (``noise`` 0) makes the low-noise steps iterate towards the least-squares fit of the noise; with
    ``noise`` 1 the sample mean stays much nearer the exact posterior mean (measured relative errors,
    noise 0 / noise 1: POCS 2.3 / 0.06, CCDF 4.0 / 0.14, DDS 14.8 / 0.80; at NFE 20 with noise 1 all
    three are at 0.01-0.05)."""
    prior, n, sigma_y = _prior(), 64, 0.3
    op1 = CartesianOperator(_mask(), _maps(1))
    x = prior.sample(1, make_generator(3)).to(torch.complex64)
    y1 = op1.A(x) + sigma_y * complex_randn((1, 2, H, W), make_generator(5)) * _mask()
    post = prior.posterior(y1, op1, sigma_y)[0][0]
    op, y = CartesianOperator(_mask(), _maps(n)), y1.expand(n, -1, -1, -1).clone()
    errors = []
    for noise in (0.0, 1.0):
        m = REGISTRY[name](noise=noise, **({"sigma_t0": 1.0} if name == "ccdf" else {}))
        gens = _gens(n)
        start, sig = m.prepare(y, op, m.schedule(200, prior.sigma_min, prior.sigma_max), gens, op.AH(y))
        out, _ = reverse_loop(prior, start, sig, m, y, op, gens)
        errors.append(float((out.mean(0) - post).abs().pow(2).mean() / post.abs().pow(2).mean()))
    assert errors[1] < 0.1 * errors[0] and errors[1] < {"pocs": 0.1, "ccdf": 0.2, "dds": 1.0}[name], errors


@pytest.mark.parametrize("name", ["pocs", "dds"])
def test_noise_is_estimated_once_per_reconstruction(name, monkeypatch):
    import mrdiff.consistency.base as base

    calls = []
    estimate = base.kspace_noise_sigma
    monkeypatch.setattr(base, "kspace_noise_sigma", lambda y: calls.append(1) or estimate(y))
    prior, op, y, _ = _problem(True)
    res = reconstruct(y, op, name, prior, nfe=8, generators=_gens(2), params={"noise": 1.0})
    assert len(calls) == 1 and res.nfe == 8 and torch.isfinite(res.mean).all()

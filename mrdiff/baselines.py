"""Classical reconstruction baselines: zero-filled, CG-SENSE, L1-wavelet and TV compressed sensing.

All share one signature, ``fn(y, op, **params) -> x``, with ``y`` ``(B, C, H, W)`` masked k-space,
``op`` a ``CartesianOperator`` and ``x`` a complex ``(B, H, W)`` image on the scale of ``y``.
The CS regularisation weights are relative: data are normalised by ``image_scale`` of the
zero-filled image before sigpy runs, so one lambda serves every scan.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np
import torch

from mrdiff.coils import rss
from mrdiff.fft import ifft2c
from mrdiff.noise import kspace_noise_sigma
from mrdiff.operators import CartesianOperator, conjugate_gradient
from mrdiff.scaling import image_scale

# Defaults from benchmarks/tune_cs.py on the `val` split (data/open-brain-128/val, 4 central slices,
# fastMRI random masks 4x/0.08 and 8x/0.04, 8 coils, 30 dB), chosen by mean SSIM over both settings;
# never tuned on `test`. Val SSIM 4x/8x: cs-l1 lambda 0.005 .573/.409, 0.01 .593/.409, 0.02 .601/.394;
# cs-tv 0.01 .618/.396, 0.05 .693/.436 (PSNR 0.9 dB lower at 4x than 0.01), 0.1 .655/.440;
# sense 3 .496/.355, 5 .495/.362, 8 .480/.363, 30 .376/.294 CG iterations (semi-convergence: noise).
# cs-l1 stops at 60 iterations (more iterations at a fixed lambda lowered SSIM on a dev simulation);
# cs-tv (primal-dual) had not converged at 60 and gained up to 0.06 SSIM at 200.
DEFAULT_LAMBDA = {"cs-l1": 0.01, "cs-tv": 0.05}
DEFAULT_CS_ITERS = {"cs-l1": 60, "cs-tv": 200}
DEFAULT_SENSE_ITERS = 5
# What held-out k-space cross-validation may search (mrdiff.tuning): {name: (lo, hi, scale)}.
TUNABLE = {
    "sense": {"iters": (1, 30, "int")},
    "cs-l1": {"lamda": (1e-4, 1e-1, "log")},
    "cs-tv": {"lamda": (1e-4, 1e-1, "log")},
}
# Where an `--auto` search of lambda starts: lambda = NOISE_LAMBDA x (the scan's noise level on the
# solver's normalised scale), see noise_lambda. The factor was read off `val` (benchmarks/results/
# self-tuning/, section "A noise-proportional start for CS-L1's lambda"): over the 10 `val` cells with a
# 13-point lambda grid (30 and 45 dB; random, equispaced 4x/8x; Poisson 4x/8x at 45 dB), the factors
# 0.14 / 0.18 / 0.25 / 0.32 / 0.44 lost on average 0.15 / 0.12 / 0.07 / 0.15 / 0.25 dB against each
# cell's best lambda (at most 0.30 dB with 0.25), the fixed 0.01 1.38 dB. Never tuned on `test`.
NOISE_LAMBDA = {"cs-l1": 0.25}


def zero_filled(y: torch.Tensor, op: CartesianOperator) -> torch.Tensor:
    """Zero-filled reconstruction whose magnitude is the RSS of the coil images (fastMRI's target
    convention; ESC for single-coil data) and whose phase is that of ``A^H y`` (0 where undefined).

    Returns:
        complex ``(B, H, W)``; for single-coil data exactly ``F^H y``.
    """
    coil_images = ifft2c(y * op.mask.to(y.device))
    if op.maps is None:
        return coil_images[:, 0]
    phase = torch.sgn(op.combine(coil_images))
    phase = torch.where(phase == 0, torch.ones_like(phase), phase)
    return rss(coil_images).to(y.dtype) * phase


def cg_sense(
    y: torch.Tensor, op: CartesianOperator, iters: int = DEFAULT_SENSE_ITERS, damping: float = 1e-3
) -> torch.Tensor:
    """CG-SENSE (Pruessmann et al., MRM 46:638, 2001): CG on ``(A^H A + damping I) x = A^H y``.

    ``damping`` is relative to the data scale (the 99th percentile of ``|A^H y|``).
    """
    rhs = op.AH(y)
    scale = image_scale(rhs).to(rhs.device)[:, None, None]
    x = conjugate_gradient(op.normal, rhs / scale, iters=iters, damping=damping)
    return x * scale


def cs_scale(y: torch.Tensor, op: CartesianOperator) -> float:
    """The scale one item's data are divided by before a sigpy CS app runs (so that one lambda serves
    every scan): ``image_scale`` of the zero-filled image of ``y`` ``(1, C, H, W)``."""
    return float(image_scale(zero_filled(y, op)))


def _sigpy_cs(app: type, y: torch.Tensor, op: CartesianOperator, lamda: float, max_iter: int):
    """Run a sigpy CS app item by item (``op.item``) on normalised data (:func:`cs_scale`); undo the scale."""
    out = []
    for b in range(y.shape[0]):
        yb, op_b = y[b : b + 1], op.item(b)
        s = cs_scale(yb, op_b)
        ones = torch.ones((1, *y.shape[-2:]), dtype=torch.complex64)
        mps = (ones if op_b.maps is None else op_b.maps[0]).cpu().numpy()
        w = torch.broadcast_to(op_b.mask.cpu(), yb.shape)[0].to(torch.float32).numpy()
        ksp = (yb[0] / s).cpu().numpy().astype(np.complex64)
        x = _run_app(app, ksp, mps, lamda, w, max_iter)
        out.append(torch.from_numpy(x).to(torch.complex64) * s)
    return torch.stack(out).to(y.device)


#: seed of the numpy generator sigpy's step-size estimate draws from (:func:`_run_app`)
SIGPY_SEED = 0


def _run_app(app: type, ksp: np.ndarray, mps: np.ndarray, lamda: float, w: np.ndarray, max_iter: int):
    """Run one sigpy app and free it at once: its operators and algorithm reference each other, so
    without a collection each slice's full-size arrays waited for Python's cycle collector (+80 MB a
    16-coil 640 x 368 slice in ``mrdiff recon --method cs-l1``).

    The app's step size is 1 / the largest eigenvalue of ``A^H A``, which sigpy's ``MaxEig`` finds by
    power iteration from a random start drawn from numpy's global generator, so the same input gave
    another output on every call (up to 5 % of the image's scale on the 32^2 test volume after 60
    iterations). The generator is seeded with :data:`SIGPY_SEED` for the call and then given back its
    state, so a CS reconstruction is a function of its input and the caller's draws are untouched."""
    state = np.random.get_state()
    np.random.seed(SIGPY_SEED)
    try:
        x = np.asarray(app(ksp, mps, lamda, weights=w, max_iter=max_iter, show_pbar=False).run())
    finally:
        np.random.set_state(state)
    gc.collect()
    return x


def noise_level(y: torch.Tensor, op: CartesianOperator) -> torch.Tensor:
    """Each item's k-space noise on the scale the CS solvers see (``(B,)``): the thermal noise per
    real component (:func:`mrdiff.noise.kspace_noise_sigma`, from the weak virtual coils of the
    k-space periphery) divided by the :func:`cs_scale` that the solvers normalise by. On the `val` brain
    it is 0.022 at 30 dB and 0.0040 at 45 dB, within a few per cent over masks and slices."""
    scale = torch.tensor([cs_scale(y[b : b + 1], op.item(b)) for b in range(y.shape[0])], dtype=torch.float64)
    return kspace_noise_sigma(y).cpu().double() / scale


def noise_lambda(y: torch.Tensor, op: CartesianOperator, per_noise: float) -> float:
    """A regularisation weight proportional to the scan's noise, ``per_noise`` x the median over items
    of :func:`noise_level`, to 3 significant digits. For the L1 (soft-threshold) denoiser a threshold
    proportional to the noise standard deviation is the classical choice (Donoho & Johnstone,
    Biometrika 81:425, 1994); the factor itself is empirical (:data:`NOISE_LAMBDA`)."""
    return float(f"{per_noise * float(noise_level(y, op).median()):.3g}")


def cs_l1(
    y: torch.Tensor, op: CartesianOperator, lamda: float | None = None, iters: int = DEFAULT_CS_ITERS["cs-l1"]
) -> torch.Tensor:
    """L1-wavelet compressed sensing (Lustig, Donoho & Pauly, MRM 58:1182, 2007) via sigpy."""
    import sigpy.mri.app  # imported here: sigpy loads numba (seconds)

    lamda = DEFAULT_LAMBDA["cs-l1"] if lamda is None else lamda
    return _sigpy_cs(sigpy.mri.app.L1WaveletRecon, y.cpu(), op, lamda, iters).to(y.device)


def cs_tv(
    y: torch.Tensor, op: CartesianOperator, lamda: float | None = None, iters: int = DEFAULT_CS_ITERS["cs-tv"]
) -> torch.Tensor:
    """Total-variation compressed sensing (Block, Uecker & Frahm, MRM 57:1086, 2007) via sigpy."""
    import sigpy.mri.app

    lamda = DEFAULT_LAMBDA["cs-tv"] if lamda is None else lamda
    return _sigpy_cs(sigpy.mri.app.TotalVariationRecon, y.cpu(), op, lamda, iters).to(y.device)


BASELINES: dict[str, Callable[..., torch.Tensor]] = {
    "zf": zero_filled,
    "sense": cg_sense,
    "cs-l1": cs_l1,
    "cs-tv": cs_tv,
}

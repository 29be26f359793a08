"""Diffusion reconstruction entry point (contract 3): normalise, sample K posterior draws, un-normalise.

Scale: ``image_scale`` (99th percentile of |x|) of a 5-iteration CG-SENSE estimate, times the prior's
``scale_calibration``, so the prior sees images with the range it was trained on. The calibration
belongs to the prior (its file's ``meta``; priors without one use
``mrdiff.priors.checkpoint.DEFAULT_SCALE_CALIBRATION`` = 1.175, the median ratio
``image_scale(ground truth) / image_scale(estimate)`` measured for brain128-cpu on `val`: 8 middle
slices of open-brain-128/val, random 1-D masks at 4x and 8x, centre fraction 0.08, range 1.13-1.22;
``python -m benchmarks.recon_speed --calibrate --accel 4,8 --slices 8``). The scale is applied once to
``y`` (and ``init``) and undone once on the outputs.

Method defaults were tuned on `val` only (``benchmarks/recon_speed.py``): DDS eta 1.0 and 3 CG steps,
best at 10-20 NFE (50 NFE was 0.8 dB worse); CCDF sigma_t0 0.15 from the CS-L1 baseline at 10 NFE;
DPS zeta 5 (0.3-1 left the data unused at 20 NFE, 20 and more diverged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mrdiff.consistency import REGISTRY
from mrdiff.errors import InputError
from mrdiff.operators import CartesianOperator, conjugate_gradient
from mrdiff.priors.checkpoint import DEFAULT_SCALE_CALIBRATION
from mrdiff.sampling import reverse_loop
from mrdiff.scaling import image_scale

SCALE_ITERS = 5


@dataclass(frozen=True)
class ReconResult:
    """Outputs on the scale of ``y``.

    Attributes:
        mean: posterior mean over the K samples, complex ``(B, H, W)``.
        std: per-pixel posterior standard deviation ``sqrt(sum_k |x_k - mean|^2 / (K - 1))`` (0 when
            K = 1), float ``(B, H, W)``.
        residual: relative data-consistency residual ``||A mean - y|| / ||y||``, float ``(B,)``.
        nfe: denoiser calls per sample.
        samples: the K posterior samples, complex ``(B, K, H, W)`` (for averaging studies).
    """

    mean: torch.Tensor
    std: torch.Tensor
    residual: torch.Tensor
    nfe: int
    samples: torch.Tensor | None = None


def estimate_scale(
    y: torch.Tensor,
    op: CartesianOperator,
    iters: int = SCALE_ITERS,
    calibration: float = DEFAULT_SCALE_CALIBRATION,
) -> torch.Tensor:
    """Per-item scale ``(B,)``: ``image_scale`` of a ``iters``-step CG-SENSE image, times
    ``calibration`` (the prior's ``scale_calibration``)."""
    x = op.AH(y)
    if iters > 0:
        s0 = image_scale(x).to(x.device)[:, None, None]
        x = conjugate_gradient(op.normal, x / s0, iters=iters) * s0
    return image_scale(x).to(y.device) * calibration


def prior_scale(y: torch.Tensor, op: CartesianOperator, denoiser) -> torch.Tensor:
    """:func:`estimate_scale` with the prior's own calibration (``denoiser.scale_calibration``, else
    :data:`~mrdiff.priors.checkpoint.DEFAULT_SCALE_CALIBRATION`)."""
    calibration = getattr(denoiser, "scale_calibration", None)
    return estimate_scale(y, op, calibration=float(calibration or DEFAULT_SCALE_CALIBRATION))


def _check(y, method, nfe, samples, generators) -> None:
    if y.ndim != 4 or not y.is_complex():
        raise InputError(f"reconstruct: y must be complex (B, C, H, W), got {tuple(y.shape)} {y.dtype}")
    if method not in REGISTRY:
        raise InputError(f"reconstruct: unknown method '{method}' (choose from {', '.join(REGISTRY)})")
    if nfe < 1 or samples < 1:
        raise InputError(f"reconstruct: nfe and samples must be >= 1, got nfe={nfe}, samples={samples}")
    if len(generators) != y.shape[0]:
        raise InputError(f"reconstruct: need one generator per slice, got {len(generators)} for {y.shape[0]}")


def reconstruct(
    y: torch.Tensor,
    op: CartesianOperator,
    method: str,
    denoiser: Callable,
    *,
    nfe: int = 50,
    samples: int = 1,
    generators: Sequence[torch.Generator],
    params: dict | None = None,
    init: torch.Tensor | None = None,
    autocast: bool = True,
    callback: Callable | None = None,
    scale: torch.Tensor | None = None,
) -> ReconResult:
    """Reconstruct a batch of slices with a diffusion prior and a consistency method.

    Args:
        y: masked k-space ``(B, C, H, W)`` complex (unscaled).
        op: operator for the batch.
        method: a key of ``mrdiff.consistency.REGISTRY``.
        denoiser: ``D(x, sigma) -> x0_hat`` with ``sigma_min`` / ``sigma_max`` attributes.
        nfe: denoiser calls per sample.
        samples: K posterior samples per slice (batched together).
        generators: one per slice; sample k of slice b draws from generator b, so outputs do not
            depend on the batch composition.
        params: method parameters (see each method's ``defaults``).
        init: baseline reconstruction ``(B, H, W)`` for warm-started methods (CCDF).
        autocast: run the denoiser in bf16 autocast on CUDA.
        callback: passed to the loop, ``callback(step, x_next)``.
        scale: per-slice image scale ``(B,)`` to use instead of :func:`estimate_scale` (a callback
            that compares the loop's state with measurements needs the scale it is on).

    Returns:
        :class:`ReconResult` on the scale of ``y``.
    """
    _check(y, method, nfe, samples, generators)
    B, K = y.shape[0], samples
    m = REGISTRY[method](**(params or {}))
    scale = (prior_scale(y, op, denoiser) if scale is None else scale).to(y.device)
    y_s = (y / scale[:, None, None, None]).repeat_interleave(K, 0)
    init_s = None if init is None else (init.to(y.device) / scale[:, None, None]).repeat_interleave(K, 0)
    op_k = op.repeat(K)
    gens = [g for g in generators for _ in range(K)]
    sigmas = m.schedule(nfe, float(denoiser.sigma_min), float(denoiser.sigma_max))
    x, sigmas = m.prepare(y_s, op_k, sigmas, gens, init_s)
    x, used = reverse_loop(denoiser, x, sigmas, m, y_s, op_k, gens, callback, autocast)
    x = x.reshape(B, K, *x.shape[-2:]) * scale[:, None, None, None]
    mean = x.mean(1)
    std = ((x - mean[:, None]).abs() ** 2).sum(1).div(max(K - 1, 1)).sqrt()
    mean = mean.to(y.dtype)
    return ReconResult(mean, std.float(), op.residual(mean, y).float(), used, x.to(y.dtype))

"""Undersampling masks, seeded from the file name as fastMRI does.

1-D Cartesian masks select phase-encode columns (the last axis, W), as in fastMRI. The fastMRI
families (random, equispaced, equispaced_fraction, magic, magic_fraction) come from
``fastmri.data.subsample`` (Zbontar et al., arXiv:1811.08839; Defazio, arXiv:2004.00125 for "magic").
We add a 1-D Gaussian variable-density mask and 2-D Poisson-disc sampling (sigpy.mri.poisson;
Bridson, SIGGRAPH 2007 sketches; Lustig et al., MRM 2007 for variable density in MRI).
"""

from __future__ import annotations

import numpy as np
import torch

from mrdiff.errors import InputError
from mrdiff.noise import seed_for

FASTMRI_KINDS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
MASK_KINDS = FASTMRI_KINDS + ("gaussian", "poisson")


def canonical_kind(kind: str) -> str:
    """Accept ``equispaced-fraction`` as well as fastMRI's ``equispaced_fraction`` spelling."""
    return kind.replace("-", "_")


def fastmri_seed(file_name: str) -> tuple[int, ...]:
    """The seed fastMRI's ``SliceDataset`` uses for a file: ``tuple(map(ord, fname))``."""
    return tuple(map(ord, file_name))


def _check(kind: str, shape: tuple[int, int], accel: float, center_fraction: float) -> None:
    if kind not in MASK_KINDS:
        raise InputError(f"unknown mask '{kind}' (choose from {', '.join(MASK_KINDS)})")
    if not accel >= 1:
        raise InputError(f"acceleration must be >= 1, got {accel}")
    if not 0 <= center_fraction <= 1:
        raise InputError(f"center fraction must be in [0, 1], got {center_fraction}")
    if len(shape) != 2 or min(shape) < 2:
        raise InputError(f"mask shape must be (H, W) with H, W >= 2, got {shape}")


def _fastmri_mask(kind: str, shape: tuple[int, int], accel: float, cf: float, seed) -> torch.Tensor:
    """A fastMRI 1-D column mask, shape ``(W,)``."""
    from fastmri.data import subsample  # imported here: fastmri.data loads pandas and requests (~1 s)

    if kind.startswith("equispaced") or kind.startswith("magic"):
        if float(accel) != int(accel):
            raise InputError(f"mask '{kind}' needs an integer acceleration, got {accel}")
        accel = int(accel)
    func = subsample.create_mask_for_mask_type(kind, [cf], [accel])
    mask, _ = func((1, shape[0], shape[1], 2), offset=None, seed=seed)
    return mask.reshape(-1) > 0


def _gaussian_mask(shape: tuple[int, int], accel: float, cf: float, seed: int) -> torch.Tensor:
    """1-D Gaussian variable-density column mask (no repeats), shape ``(W,)``."""
    W = shape[1]
    rng = np.random.default_rng(seed)
    n_total = max(1, int(round(W / accel)))
    n_center = min(n_total, int(round(W * cf)))
    mask = np.zeros(W, dtype=bool)
    c0 = (W - n_center + 1) // 2
    mask[c0 : c0 + n_center] = True
    idx = np.arange(W)
    w = np.exp(-0.5 * ((idx - W / 2) / (W / 6)) ** 2)
    w[mask] = 0
    n_rest = min(n_total - n_center, int((w > 0).sum()))
    if n_rest > 0:
        mask[rng.choice(W, size=n_rest, replace=False, p=w / w.sum())] = True
    return torch.from_numpy(mask)


def _poisson_mask(shape: tuple[int, int], accel: float, cf: float, seed: int, tries: int = 8) -> torch.Tensor:
    """2-D variable-density Poisson-disc mask with a square fully sampled centre, shape ``(H, W)``.

    sigpy's sampler (Lustig's variable-density Poisson disc, as in ``sigpy.mri.poisson``) gives up when
    a draw cannot reach the acceleration, which happens on small grids for some seeds. We then redraw
    with seeds derived from ``seed``, so the result stays a deterministic function of the inputs.
    """
    import sigpy.mri  # imported here: sigpy loads numba (seconds)

    calib = (max(2, int(round(shape[0] * cf))), max(2, int(round(shape[1] * cf))))
    for attempt in range(tries):
        draw_seed = seed if attempt == 0 else seed_for(seed, "poisson-retry", attempt)
        try:
            mask = sigpy.mri.poisson(shape, accel, calib=calib, dtype=np.float32, seed=draw_seed % (2**32))
        except ValueError as err:
            last = err
            continue
        return torch.from_numpy(np.asarray(mask) > 0)
    raise InputError(
        f"cannot draw a Poisson-disc mask at {accel}x on a {shape} grid after {tries} seeds ({last})"
    )


def make_mask(
    kind: str,
    shape: tuple[int, int],
    accel: float,
    center_fraction: float,
    file_name: str = "",
    seed: int | None = None,
) -> torch.Tensor:
    """Build a sampling mask, reproducible from ``file_name`` (and an optional extra ``seed``).

    Args:
        kind: one of ``MASK_KINDS`` (``-`` may replace ``_``).
        shape: k-space grid ``(H, W)``.
        accel: acceleration factor (>= 1).
        center_fraction: fraction of fully sampled centre columns (1-D) or of each axis (2-D).
        file_name: the volume's file name; with ``seed=None`` the fastMRI seed of this name is used,
            so every method in a benchmark sees the same mask.
        seed: optional integer mixed with the file name (benchmark repetitions).

    Returns:
        bool tensor ``(W,)`` for 1-D masks or ``(H, W)`` for Poisson; broadcastable to ``(H, W)``.
    """
    shape = tuple(int(s) for s in shape)
    kind = canonical_kind(kind)
    _check(kind, shape, accel, center_fraction)
    if kind in FASTMRI_KINDS:
        fm_seed = fastmri_seed(file_name) if seed is None else seed_for(file_name, seed) % (2**32)
        return _fastmri_mask(kind, shape, accel, center_fraction, fm_seed)
    int_seed = seed_for("mask", kind, file_name, seed)
    if kind == "gaussian":
        return _gaussian_mask(shape, accel, center_fraction, int_seed)
    return _poisson_mask(shape, accel, center_fraction, int_seed)


def as_2d(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Broadcast a ``(W,)`` or ``(H, W)`` mask to a bool ``(H, W)`` tensor."""
    return torch.broadcast_to(mask.bool(), tuple(shape)).clone()


def sampling_fraction(mask: torch.Tensor, shape: tuple[int, int]) -> float:
    """Fraction of the ``(H, W)`` grid that is sampled."""
    return float(as_2d(mask, shape).float().mean())

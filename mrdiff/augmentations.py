"""Augmentations for contrast and anatomy shift (issue 14): random tissue intensities from k-means
classes, affine and elastic warps, and a small noise floor. Used by :func:`mrdiff.data.augment`.

Every function that draws takes the per-item ``torch.Generator``; none draws when it is switched off,
so configs that leave these options off see exactly the random stream they saw before.
Magnitudes are normalised by ``mrdiff.scaling.image_scale`` (99th percentile about 1).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from mrdiff.noise import complex_randn

HEAD_THRESHOLD = 0.05  # magnitudes (relative to the 99th percentile) counted as head, not background


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def kmeans_1d(
    values: torch.Tensor, k: int, lo: float = 0.0, iters: int = 10, bins: int = 256
) -> torch.Tensor | None:
    """Lloyd's k-means (Lloyd, IEEE Trans. Inf. Theory 1982) on the 1-D ``values`` at or above ``lo``, run
    on their histogram, each bin standing for its mean (cost nearly independent of the number of values;
    exact on an image of a few levels). Centres start at the (i + 1/2)/k quantiles: deterministic.

    Args:
        values: real tensor of any shape.
        k: number of classes.
        lo: values below it are ignored (e.g. the background of an image).

    Returns:
        ascending centres ``(k,)`` (float32), or None when no value is at or above ``lo``.
    """
    v = values.detach().float().cpu().numpy().ravel().astype(np.float64)
    v = v[v >= lo]
    if v.size == 0:
        return None
    hi = float(v.max()) + 1e-6
    idx = np.minimum(((v - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    sums = np.bincount(idx, v, minlength=bins)
    pos = np.where(count > 0, sums / np.maximum(count, 1), lo + (np.arange(bins) + 0.5) * (hi - lo) / bins)
    cdf = np.cumsum(count) / count.sum()
    centres = pos[np.minimum(np.searchsorted(cdf, (np.arange(k) + 0.5) / k), bins - 1)]
    for _ in range(iters):
        label = np.searchsorted((centres[:-1] + centres[1:]) / 2, pos)
        total = np.bincount(label, count, minlength=k)
        moment = np.bincount(label, sums, minlength=k)
        new = np.sort(np.where(total > 0, moment / np.maximum(total, 1e-12), centres))
        done = np.abs(new - centres).max() < 1e-6
        centres = new
        if done:
            break
    return torch.from_numpy(centres).float()


def tissue_intensities(k: int, generator: torch.Generator, inverted: bool) -> torch.Tensor:
    """New intensities ``(k,)`` in [0.1, 1] for classes in ascending (T1) order: independent uniform
    draws in any order, as SynthSeg draws its label intensities (Billot et al. 2023), or sorted
    descending when ``inverted`` (T2/PD-like: CSF brightest, white matter darkest)."""
    v = 0.1 + 0.9 * torch.rand(k, generator=generator)
    return v.sort(descending=True).values if inverted else v


def _steps(mag: torch.Tensor, centres: torch.Tensor, soft: float) -> list[torch.Tensor]:
    """Class-membership steps at the midpoints between neighbouring centres: hard (``soft`` = 0) or
    smoothstep ramps ``soft`` times the gap between the two centres wide (``soft`` <= 1 keeps every
    centre exactly on its class value)."""
    out = []
    for i in range(len(centres) - 1):
        mid, gap = float(centres[i] + centres[i + 1]) / 2, float(centres[i + 1] - centres[i])
        if soft > 0:
            t = ((mag - mid) / max(min(soft, 1.0) * gap, 1e-6) + 0.5).clamp(0, 1)
            out.append(t * t * (3 - 2 * t))
        else:
            out.append((mag > mid).float())
    return out


def _through(steps: list[torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """``values[0] + sum_i (values[i+1] - values[i]) * steps[i]``: the class value, smoothly stepped."""
    out = torch.full_like(steps[0], float(values[0])) if steps else None
    for i, step in enumerate(steps):
        out = out + float(values[i + 1] - values[i]) * step
    return out


def tissue_remap(
    mag: torch.Tensor, values: torch.Tensor, soft: float = 0.0, texture: float = 0.0
) -> torch.Tensor:
    """Give every k-means tissue class of ``mag`` its own intensity (random tissue contrast).

    SynthSeg (Billot et al., Medical Image Analysis 2023) draws an independent random intensity for
    each label of a label map so a network cannot rely on one MR contrast. Here the labels are k-means
    classes of the magnitude inside the head (``mag >= HEAD_THRESHOLD``; fitted on every second pixel),
    k = ``len(values)``. Class edges are smooth ramps in intensity (``soft``), so the image's own
    partial-volume edges become smooth transitions rather than hard steps, and no spatial blur costs
    resolution. Each pixel keeps ``(mag / its class centre) ** texture`` of its within-class texture
    (the ratio clipped to [0.75, 1.33]), and a ramp from 0 at ``mag = 0`` to 1 at twice
    ``HEAD_THRESHOLD`` keeps the background dark.

    Args:
        mag: real ``(H, W)`` magnitude, 99th percentile about 1.
        values: new intensity ``(k,)`` of each class, classes in ascending order of their centre.
        soft: transition width as a fraction of the gap between neighbouring centres, in [0, 1]
            (0: hard steps).
        texture: exponent of the kept texture in [0, 1] (0: piecewise-constant classes).

    Returns:
        real ``(H, W)`` remapped magnitude.
    """
    sample = mag[::2, ::2] if min(mag.shape) >= 64 else mag
    centres = kmeans_1d(sample, len(values), lo=HEAD_THRESHOLD)
    if centres is None or len(values) < 2:
        return mag
    steps = _steps(mag, centres, soft)
    new = _through(steps, values)
    if texture > 0:
        ratio = mag / _through(steps, centres).clamp_min(1e-6)
        new = new * ratio.clamp(0.75, 1.33) ** texture
    return new * (mag / (2 * HEAD_THRESHOLD)).clamp(max=1.0)


def affine_matrix(generator: torch.Generator, rotate_deg: float, shear: float, aspect: float) -> torch.Tensor:
    """Random 2x2 in-plane linear map: rotation in ±``rotate_deg``, shear in ±``shear`` and an aspect
    change ``exp(±aspect)`` split evenly between the axes (determinant 1: no isotropic zoom, which is
    ``DataConfig.scale_range``'s job, so the two never stack). Standard augmentation of segmentation
    networks (nnU-Net, Isensee et al., Nature Methods 2021; SynthSeg)."""
    angle = math.radians(_uniform(generator, -rotate_deg, rotate_deg))
    s = _uniform(generator, -shear, shear)
    a = math.exp(_uniform(generator, -aspect, aspect) / 2)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return rot @ torch.tensor([[1.0, s], [0.0, 1.0]]) @ torch.diag(torch.tensor([a, 1 / a]))


def elastic_field(
    shape: tuple[int, int], generator: torch.Generator, strength: float, knots: int
) -> torch.Tensor:
    """Smooth random displacement field ``(H, W, 2)`` in ``grid_sample`` units (2 = the image width).

    Elastic deformation (Simard et al., ICDAR 2003) smooths a random per-pixel field with a Gaussian;
    like TorchIO's RandomElasticDeformation we draw ``knots x knots`` control points uniformly in
    [-1, 1] and upsample them (bicubic to at most 32 x 32, then bilinear), which is smooth by
    construction and far cheaper. The peak displacement is about ``strength`` times the image size.
    """
    coarse = torch.rand((1, 2, knots, knots), generator=generator) * 2 - 1
    mid = (min(shape[0], 32), min(shape[1], 32))
    field = F.interpolate(coarse, size=mid, mode="bicubic", align_corners=True)
    field = F.interpolate(field, size=shape, mode="bilinear", align_corners=True)[0]
    return 2 * strength * field.permute(1, 2, 0)


@functools.lru_cache(maxsize=8)
def _pixel_axes(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixel centres: x ``(1, W)`` and y ``(H, 1)`` in (-1, 1) (``affine_grid``'s identity
    with align_corners=False)."""
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    return xs[None, :], ys[:, None]


def warp(
    x: torch.Tensor, matrix: torch.Tensor | None = None, displacement: torch.Tensor | None = None
) -> torch.Tensor:
    """Resample a complex image ``(H, W)`` at ``matrix @ p + displacement(p)`` (p: normalised pixel
    centres about the image centre), bilinear, zero outside: one interpolation for both warps.

    Args:
        x: complex ``(H, W)``.
        matrix: ``(2, 2)`` linear map acting on (x, y) coordinates; None: identity.
        displacement: ``(H, W, 2)`` from :func:`elastic_field`; None: none.

    Returns:
        complex ``(H, W)``.
    """
    xs, ys = _pixel_axes(*x.shape)
    m = [[1.0, 0.0], [0.0, 1.0]] if matrix is None else matrix.tolist()
    grid = torch.stack([m[0][0] * xs + m[0][1] * ys, m[1][0] * xs + m[1][1] * ys], dim=-1)
    if displacement is not None:
        grid = grid + displacement
    parts = torch.stack([x.real, x.imag])[None].float()
    y = F.grid_sample(parts, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return torch.complex(y[0], y[1])


def add_noise(x: torch.Tensor, generator: torch.Generator, sigma: float, scale: float) -> torch.Tensor:
    """``x + sigma * scale * (n_re + i n_im)``: white complex Gaussian noise, ``sigma`` per real component
    relative to the image scale ``scale`` (the ``mrdiff.noise`` convention): the noise floor of a real
    acquisition, which the averaged templates lack. Additive Gaussian noise is a standard training
    augmentation (e.g. nnU-Net, Isensee et al., Nature Methods 2021); keep it small, since it becomes
    part of the denoising target."""
    return x + (sigma * scale) * complex_randn(tuple(x.shape), generator, device=x.device)

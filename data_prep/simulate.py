"""Simulate multi-coil k-space from a magnitude slice without the "inverse crime".

Pipeline for one slice (every random draw from one ``torch.Generator`` seeded per (file, slice)):

1. resample the magnitude slice onto a square *fine* grid ``F = 2N`` (aspect kept, zero padded);
2. multiply by a smooth random phase and by birdcage coil maps on the fine grid;
3. FFT each coil image, crop the central ``N x N`` of k-space (scaled by ``N / F`` so intensities are
   kept) -> noiseless k-space on the output grid;
4. ground truth from the noiseless cropped coil images: ``reconstruction_rss`` = their RSS, ``image``
   = their coil combination ``sum_c conj(S_c) x_c`` with the *output-grid* maps ``S`` (same birdcage
   geometry sampled on the N grid);
5. add complex Gaussian noise, sigma per real component (image and k-space alike, orthonormal FFT):
   ``sigma = mean(rss[rss > 0.1 max rss]) / 10 ** (snr_db / 20)``.

The data are thus generated from a finer, continuous-like object than the N-grid model used for
reconstruction (Guerquin-Kern et al., "Realistic analytical phantoms for parallel MRI", IEEE TMI 2012,
on the inverse crime).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mrdiff.fft import fft2c, ifft2c
from mrdiff.noise import complex_randn

FOREGROUND_LEVEL = 0.1  # fraction of the (volume-normalised) intensity counted as object
PHASE_GRID = 5  # the random phase is a bicubic upsampling of a PHASE_GRID^2 Gaussian field


@dataclass(frozen=True)
class SimulationConfig:
    """Simulation settings.

    Attributes:
        size: output grid N (presets 128 for CPU, 256 / 320 for GPU).
        coils: number of birdcage coils C.
        snr_db: SNR in dB (definition in the module docstring).
        oversample: fine grid factor; the object is built on an ``oversample * N`` grid.
    """

    size: int = 128
    coils: int = 8
    snr_db: float = 30.0
    oversample: int = 2


@dataclass(frozen=True)
class SimulatedSlice:
    """One simulated slice on the output grid (N = output size, C = coils).

    Attributes:
        kspace: noisy fully sampled k-space ``(C, N, N)`` complex64.
        image: complex ground truth ``(N, N)`` complex64 (coil-combined with ``maps``).
        maps: coil maps ``(C, N, N)`` complex64, ``sum_c |S_c|^2 = 1``.
        rss: RSS of the noiseless coil images ``(N, N)`` float32.
        sigma: noise standard deviation per real component.
    """

    kspace: torch.Tensor | np.ndarray
    image: torch.Tensor | np.ndarray
    maps: torch.Tensor | np.ndarray
    rss: torch.Tensor | np.ndarray
    sigma: float


def to_fine_grid(pixels: np.ndarray, spacing: tuple[float, float], size: int) -> torch.Tensor:
    """Resample a slice to a ``(size, size)`` grid, physical aspect kept, zero padded, antialiased.

    Args:
        pixels: ``(h, w)`` float array.
        spacing: ``(row, column)`` pixel size in mm.
        size: output grid size.

    Returns:
        float32 tensor ``(size, size)``, non-negative.
    """
    h, w = pixels.shape
    extent_h, extent_w = h * spacing[0], w * spacing[1]
    longest = max(extent_h, extent_w)
    new_h = max(1, round(size * extent_h / longest))
    new_w = max(1, round(size * extent_w / longest))
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x = x[0, 0].clamp_min(0)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(x, (left, size - new_w - left, top, size - new_h - top))


def foreground_fraction(pixels: np.ndarray, size: int, ref: float = 1.0) -> float:
    """Fraction of the square-padded ``size x size`` resampling of ``pixels`` ``(h, w)`` that is
    brighter than ``FOREGROUND_LEVEL * ref`` (the empty-slice rule)."""
    x = to_fine_grid(pixels, (1.0, 1.0), size)
    return float((x > FOREGROUND_LEVEL * ref).float().mean())


def smooth_phase(size: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random phase map ``(size, size)`` in radians: a bicubic upsampling of a coarse
    Gaussian field scaled to a random peak in ``[pi/2, pi]``, plus a random constant offset."""
    coarse = torch.randn((1, 1, PHASE_GRID, PHASE_GRID), generator=generator)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
    field = field / field.abs().max().clamp_min(1e-6)
    peak = torch.pi * (0.5 + 0.5 * torch.rand((), generator=generator))
    offset = torch.pi * (2 * torch.rand((), generator=generator) - 1)
    return peak * field + offset


@functools.lru_cache(maxsize=8)
def birdcage(coils: int, size: int) -> torch.Tensor:
    """Birdcage coil maps ``(coils, size, size)`` complex64 normalised to ``sum_c |S_c|^2 = 1``
    (sigpy.mri.birdcage_maps, radius 1.5 FOV; its grid matches the centred FFT grid at any size)."""
    import sigpy.mri

    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, size, size), r=1.5).astype(np.complex64))
    return maps / (maps.abs() ** 2).sum(0, keepdim=True).sqrt()


def crop_kspace(k: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size x size`` of centred orthonormal k-space ``(..., F, F)``, scaled by ``size / F`` so image
    intensities are unchanged by the coarser sampling."""
    full = k.shape[-1]
    start = full // 2 - size // 2
    return k[..., start : start + size, start : start + size] * (size / full)


def noise_sigma(rss: torch.Tensor, snr_db: float) -> float:
    """Noise sigma per real component for ``snr_db``: mean object intensity / 10^(snr_db/20)."""
    obj = rss[rss > FOREGROUND_LEVEL * rss.max()]
    signal = float(obj.mean()) if obj.numel() else float(rss.max())
    return signal / 10 ** (snr_db / 20)


def simulate_slice(pixels: np.ndarray, cfg: SimulationConfig, generator: torch.Generator) -> SimulatedSlice:
    """Simulate one slice: resample ``pixels`` ``(h, w)`` (square pixels) to the fine grid, then
    :func:`simulate_fine`; returns numpy arrays (see :class:`SimulatedSlice`)."""
    fine = to_fine_grid(pixels, (1.0, 1.0), cfg.oversample * cfg.size)
    sim = simulate_fine(fine, cfg.size, cfg.coils, cfg.snr_db, generator)
    return SimulatedSlice(
        kspace=sim.kspace.numpy(),
        image=sim.image.numpy(),
        maps=sim.maps.numpy(),
        rss=sim.rss.numpy(),
        sigma=sim.sigma,
    )


def simulate_image(pixels: np.ndarray, cfg: SimulationConfig, generator: torch.Generator) -> torch.Tensor:
    """The complex ground truth ``(N, N)`` of :func:`simulate_slice` alone: the fine-grid magnitude with
    the same smooth phase (same draws from ``generator``), band-limited to the N grid by k-space
    cropping. It equals the coil-combined ``image`` of a full simulation up to the coil maps'
    resampling (maps are normalised, so combining undoes them)."""
    fine = to_fine_grid(pixels, (1.0, 1.0), cfg.oversample * cfg.size)
    return ifft2c(crop_kspace(fft2c(with_smooth_phase(fine, generator)), cfg.size))


def with_smooth_phase(fine: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Complex ``(F, F)`` image: magnitude ``fine`` times :func:`smooth_phase` (the first draws of a slice's
    generator, shared by the full simulation and the images-only one)."""
    return fine.to(torch.complex64) * torch.polar(
        torch.ones_like(fine), smooth_phase(fine.shape[-1], generator)
    )


def simulate_fine(
    fine: torch.Tensor, size: int, coils: int, snr_db: float, generator: torch.Generator
) -> SimulatedSlice:
    """Simulate noisy multi-coil k-space on an ``size`` grid from a fine-grid magnitude slice.

    Args:
        fine: magnitude ``(F, F)`` float32, F > size (typically 2 * size).
        size: output grid N.
        coils: number of birdcage coils C.
        snr_db: signal-to-noise ratio in dB (see module docstring).
        generator: CPU generator seeded per (file, slice).

    Returns:
        :class:`SimulatedSlice` on the N grid.
    """
    full = fine.shape[-1]
    if fine.shape != (full, full) or full < size:
        raise ValueError(f"fine grid must be square and >= {size}, got {tuple(fine.shape)}")
    x_fine = with_smooth_phase(fine, generator)
    k_clean = crop_kspace(fft2c(birdcage(coils, full) * x_fine), size)
    coil_images = ifft2c(k_clean)
    maps = birdcage(coils, size)
    rss = (coil_images.abs() ** 2).sum(0).sqrt()
    image = (maps.conj() * coil_images).sum(0)
    sigma = noise_sigma(rss, snr_db)
    kspace = k_clean + sigma * complex_randn(tuple(k_clean.shape), generator)
    return SimulatedSlice(kspace=kspace, image=image, maps=maps.clone(), rss=rss.float(), sigma=sigma)

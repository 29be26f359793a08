"""Simulate multi-coil k-space from a magnitude slice without the "inverse crime".

Pipeline for one slice (every random draw from one ``torch.Generator`` seeded per (file, slice)):

1. resample the magnitude slice onto a square *fine* grid ``F = 2N`` (aspect kept, zero padded);
2. multiply by a smooth random phase, zero-pad to the fine k-space grid ``2H x 2W`` (``H x W`` the
   output k-space grid, ``N x N`` by default) and multiply by birdcage coil maps on that grid;
3. FFT each coil image, crop the central ``H x W`` of k-space (scaled by ``sqrt(HW / (2H 2W))`` so
   intensities are kept) -> noiseless k-space on the output grid;
4. ground truth from the noiseless cropped coil images: ``reconstruction_rss`` = the centre ``N x N``
   of their RSS, ``image`` = the centre ``N x N`` of their coil combination ``sum_c conj(S_c) x_c`` with
   the *output-grid* maps ``S`` (same birdcage geometry sampled on the ``H x W`` grid). With a larger
   k-space grid (fastMRI multi-coil brain: ``640 x 368`` k-space, readout oversampled 2x, ``320 x 320``
   targets) this is fastMRI's ``reconstruction_rss`` convention: ``center_crop(rss(ifft2c(k)), (N, N))``;
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
from mrdiff.io import center_crop
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
        kspace_shape: output k-space grid ``(H, W)``, each >= N (``None``: ``(N, N)``); the object
            fills the centre ``N x N`` of the ``H x W`` image (e.g. ``(640, 368)`` for N = 320).
    """

    size: int = 128
    coils: int = 8
    snr_db: float = 30.0
    oversample: int = 2
    kspace_shape: tuple[int, int] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """The output k-space grid ``(H, W)``."""
        return (self.size, self.size) if self.kspace_shape is None else tuple(self.kspace_shape)


@dataclass(frozen=True)
class SimulatedSlice:
    """One simulated slice on the output grid (N = output size, ``H x W`` k-space grid, C = coils).

    Attributes:
        kspace: noisy fully sampled k-space ``(C, H, W)`` complex64.
        image: complex ground truth ``(N, N)`` complex64 (coil-combined with ``maps``, centre crop).
        maps: coil maps ``(C, H, W)`` complex64, ``sum_c |S_c|^2 = 1``.
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
def birdcage(coils: int, size: int | tuple[int, int], fov: int | None = None) -> torch.Tensor:
    """Birdcage coil maps ``(coils, H, W)`` complex64 normalised to ``sum_c |S_c|^2 = 1``.

    The formula of ``sigpy.mri.birdcage_maps`` (radius 1.5), with coordinates in units of half the
    object's field of view ``fov`` pixels (default: the grid side, where it equals sigpy exactly), so a
    grid larger than the object (readout oversampling) sees the same coils as the object's square grid.
    The grid matches the centred FFT grid at any size.
    """
    H, W = (size, size) if isinstance(size, int) else size
    fov = W if fov is None else fov
    c, y, x = np.mgrid[:coils, :H, :W]
    angle = c * (2 * np.pi / coils)
    x_co = (x - W / 2.0) / (fov / 2.0) - 1.5 * np.cos(angle)
    y_co = (y - H / 2.0) / (fov / 2.0) - 1.5 * np.sin(angle)
    rr = np.maximum(np.sqrt(x_co**2 + y_co**2), 1e-3)  # a pixel on a coil (outside the object's FOV)
    out = (1.0 / rr) * np.exp(1j * (np.arctan2(x_co, -y_co) - angle))
    out /= sum(abs(out) ** 2, 0) ** 0.5
    maps = torch.from_numpy(out.astype(np.complex64))
    return maps / (maps.abs() ** 2).sum(0, keepdim=True).sqrt()


def crop_kspace(k: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Central ``size`` (``N`` or ``(H, W)``) of centred orthonormal k-space ``(..., F_h, F_w)``, scaled by
    ``sqrt(H W / (F_h F_w))`` so image intensities are unchanged by the coarser sampling."""
    H, W = (size, size) if isinstance(size, int) else size
    Fh, Fw = k.shape[-2:]
    top, left = Fh // 2 - H // 2, Fw // 2 - W // 2
    return k[..., top : top + H, left : left + W] * ((H * W) / (Fh * Fw)) ** 0.5


def pad_to(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` ``(..., h, w)`` to ``shape``, centred as fastMRI's
    ``center_crop`` takes it back (offsets ``(H - h) // 2``, ``(W - w) // 2``)."""
    h, w = x.shape[-2:]
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    return F.pad(x, (left, shape[1] - w - left, top, shape[0] - h - top))


def noise_sigma(rss: torch.Tensor, snr_db: float) -> float:
    """Noise sigma per real component for ``snr_db``: mean object intensity / 10^(snr_db/20)."""
    obj = rss[rss > FOREGROUND_LEVEL * rss.max()]
    signal = float(obj.mean()) if obj.numel() else float(rss.max())
    return signal / 10 ** (snr_db / 20)


def simulate_slice(pixels: np.ndarray, cfg: SimulationConfig, generator: torch.Generator) -> SimulatedSlice:
    """Simulate one slice: resample ``pixels`` ``(h, w)`` (square pixels) to the fine grid, then
    :func:`simulate_fine`; returns numpy arrays (see :class:`SimulatedSlice`)."""
    fine = to_fine_grid(pixels, (1.0, 1.0), cfg.oversample * cfg.size)
    sim = simulate_fine(fine, cfg.size, cfg.coils, cfg.snr_db, generator, cfg.kspace_shape)
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
    fine: torch.Tensor,
    size: int,
    coils: int,
    snr_db: float,
    generator: torch.Generator,
    kspace_shape: tuple[int, int] | None = None,
) -> SimulatedSlice:
    """Simulate noisy multi-coil k-space on an ``H x W`` grid from a fine-grid magnitude slice.

    Args:
        fine: magnitude ``(F, F)`` float32 of the object's field of view, F > size (typically 2 * size).
        size: output image grid N (the targets are ``N x N``).
        coils: number of birdcage coils C.
        snr_db: signal-to-noise ratio in dB (see module docstring).
        generator: CPU generator seeded per (file, slice).
        kspace_shape: output k-space grid ``(H, W)``, each >= N (default ``(N, N)``); the fine object is
            zero-padded to ``(F H / N, F W / N)`` first, so it fills the centre ``N x N`` of the image.

    Returns:
        :class:`SimulatedSlice`: k-space and maps on the ``H x W`` grid, targets ``N x N``.
    """
    full = fine.shape[-1]
    H, W = (size, size) if kspace_shape is None else kspace_shape
    if (
        fine.shape != (full, full)
        or full < size
        or H < size
        or W < size
        or (full * H) % size
        or (full * W) % size
    ):
        raise ValueError(
            f"fine grid must be square and >= {size}, k-space grid {(H, W)} >= {size} and a multiple of "
            f"{size} / fine size; got fine {tuple(fine.shape)}"
        )
    fine_grid = (full * H // size, full * W // size)
    x_fine = pad_to(with_smooth_phase(fine, generator), fine_grid)
    k_clean = crop_kspace(fft2c(birdcage(coils, fine_grid, full) * x_fine), (H, W))
    coil_images = ifft2c(k_clean)
    maps = birdcage(coils, (H, W), size)
    rss = center_crop((coil_images.abs() ** 2).sum(0).sqrt(), (size, size))
    image = center_crop((maps.conj() * coil_images).sum(0), (size, size))
    sigma = noise_sigma(rss, snr_db)
    kspace = k_clean + sigma * complex_randn(tuple(k_clean.shape), generator)
    return SimulatedSlice(
        kspace=kspace, image=image.clone(), maps=maps.clone(), rss=rss.float().clone(), sigma=sigma
    )

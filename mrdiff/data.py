"""Training images from prepared HDF5 volumes, augmentation and the seeded per-step batch order.

Each ``.h5`` file (contract 1) holds ``image`` complex64 ``(S, H, W)`` (complex ground truth); files
without it fall back to ``reconstruction_rss`` (a real magnitude image). Slices are centre-cropped or
zero-padded to the configured square resolution and kept in memory. Which slice fills position k of
the global batch of a step, and how it is augmented, depend only on the generator the training loop
seeds per (step, k) (:func:`training_items`), so a resumed run sees exactly the data an uninterrupted
run would have seen, and a global batch is the same whatever the number of processes sharing it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from mrdiff import augmentations as aug
from mrdiff.config import DataConfig
from mrdiff.errors import InputError
from mrdiff.io import center_crop
from mrdiff.priors.patch import coord_channels
from mrdiff.priors.precond import complex_to_channels
from mrdiff.scaling import image_scale


def center_fit(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (:func:`mrdiff.io.center_crop`) or zero-pad the last two axes of ``x`` (..., H, W) to
    ``(size, size)``."""
    x = center_crop(x, (min(size, x.shape[-2]), min(size, x.shape[-1])))
    h, w = x.shape[-2:]
    ph, pw = size - h, size - w
    if ph or pw:
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if x.is_complex():
            x = torch.complex(F.pad(x.real, pad), F.pad(x.imag, pad))
        else:
            x = F.pad(x, pad)
    return x


def _read_volume(path: Path) -> torch.Tensor:
    """Complex64 ``(S, H, W)`` ground truth of one prepared volume."""
    try:
        with h5py.File(path, "r") as f:
            if "image" in f:
                arr = np.asarray(f["image"][()])
            elif "reconstruction_rss" in f:
                arr = np.asarray(f["reconstruction_rss"][()])
            else:
                raise InputError(f"{path}: has neither 'image' nor 'reconstruction_rss'")
    except OSError as err:
        raise InputError(f"{path}: cannot read HDF5 file ({err})") from err
    if arr.ndim != 3:
        raise InputError(f"{path}: expected (S, H, W) images, got shape {arr.shape}")
    x = torch.from_numpy(arr.astype(np.complex64))
    if not torch.isfinite(torch.view_as_real(x)).all():
        raise InputError(f"{path}: images contain NaN or Inf")
    return x


def load_slices(data_dir: str | Path, cfg: DataConfig) -> tuple[torch.Tensor, list[str]]:
    """All usable slices of the ``.h5`` volumes in ``data_dir``.

    Slices whose mean magnitude is below ``cfg.min_rel_scale`` times the volume's largest slice mean
    (nearly empty slices at the ends of a volume) are dropped.

    Returns:
        images complex64 ``(N, R, R)`` with ``R = cfg.resolution``, and ``file:slice`` names ``(N,)``.
    """
    files = sorted(Path(data_dir).glob("*.h5"))
    if not files:
        raise InputError(f"no .h5 volumes found in {data_dir}")
    images, names = [], []
    for path in files:
        x = center_fit(_read_volume(path), cfg.resolution)
        level = x.abs().mean(dim=(1, 2))
        keep = level >= cfg.min_rel_scale * level.max()
        images.append(x[keep])
        names += [f"{path.name}:{int(i)}" for i in torch.nonzero(keep).flatten()]
    return torch.cat(images), names


def smooth_field(shape: tuple[int, int], generator: torch.Generator, knots: int = 4) -> torch.Tensor:
    """Random smooth field ``(H, W)`` in about [-1, 1]: bicubic upsampling of a knots x knots grid."""
    coarse = torch.rand((1, 1, knots, knots), generator=generator) * 2 - 1
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0, 0]


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def remap_intensity(mag: torch.Tensor, generator: torch.Generator, knots: int, monotone: bool):
    """Random piecewise-linear tissue-intensity curve with f(0) = 0 (T2/PD-like contrast changes).

    Args:
        mag: real ``(H, W)`` magnitude, 99th percentile about 1.
        knots: number of curve knots over [0, 1.2].
        monotone: keep intensity order (a monotone curve) or allow inversions (e.g. bright CSF).

    Returns:
        real ``(H, W)`` remapped magnitude.
    """
    u = torch.linspace(0.0, 1.2, knots)
    v = torch.rand(knots, generator=generator) * 0.9 + 0.1
    v = torch.sort(v).values if monotone else v
    v[0] = 0.0
    m = mag.clamp(0, 1.2)
    idx = torch.clamp(torch.searchsorted(u, m.flatten(), right=True) - 1, 0, knots - 2)
    t = (m.flatten() - u[idx]) / (u[idx + 1] - u[idx])
    out = v[idx] + t * (v[idx + 1] - v[idx])
    return out.reshape(mag.shape) + (mag - m).clamp_min(0) * v[-1]


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale the content of a square complex image ``(R, R)`` by ``factor`` about its centre (bilinear,
    antialiased when shrinking), cropped or zero-padded back to ``(R, R)``."""
    r = x.shape[-1]
    size = max(1, round(r * factor))
    parts = torch.stack([x.real, x.imag])[None].float()
    z = F.interpolate(parts, size=(size, size), mode="bilinear", align_corners=False, antialias=factor < 1)[0]
    return center_fit(torch.complex(z[0], z[1]), r)


def augment(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment one complex image ``(H, W)``: tissue contrast, gamma, bias, phase, orientation, warps,
    zoom (when ``cfg.scale_range`` is not (1, 1)) and a noise floor, each drawn from ``generator``.

    The options of issue 14 (``tissue_*``, ``affine_*``, ``elastic_*``, ``noise_*``;
    :mod:`mrdiff.augmentations`) draw nothing when their probability is 0, so a config without them
    gets exactly the images it got before they existed.
    """
    scale = image_scale(x[None])[0]
    mag, phase = x.abs() / scale, x.angle()
    if cfg.tissue_prob > 0 and _uniform(generator, 0, 1) < cfg.tissue_prob:
        mag = _tissue_contrast(mag, cfg, generator)
    if cfg.remap_prob > 0 and _uniform(generator, 0, 1) < cfg.remap_prob:
        monotone = _uniform(generator, 0, 1) < cfg.remap_monotone_prob
        mag = remap_intensity(mag, generator, cfg.remap_knots, monotone)
    gamma = float(np.exp(_uniform(generator, *np.log(cfg.gamma))))
    mag = mag.clamp_min(0) ** gamma
    if cfg.bias_field > 0:
        mag = mag * torch.exp(cfg.bias_field * smooth_field(mag.shape, generator))
    if cfg.phase_prob > 0 and _uniform(generator, 0, 1) < cfg.phase_prob:
        extra = cfg.phase_strength * smooth_field(mag.shape, generator)
        phase = phase + extra + _uniform(generator, -np.pi, np.pi)
    y = torch.polar(mag.float(), phase.float())
    if cfg.flips and _uniform(generator, 0, 1) < 0.5:
        y = y.flip(-1)
    if cfg.flips and _uniform(generator, 0, 1) < 0.5:
        y = y.flip(-2)
    if cfg.rot90 and y.shape[-1] == y.shape[-2]:
        y = torch.rot90(y, int(torch.randint(4, (), generator=generator)), dims=(-2, -1))
    y = _deform(y, cfg, generator)
    if tuple(cfg.scale_range) != (1.0, 1.0):
        y = zoom(y, float(np.exp(_uniform(generator, *np.log(cfg.scale_range)))))
    if cfg.noise_prob > 0 and _uniform(generator, 0, 1) < cfg.noise_prob:
        sigma = float(np.exp(_uniform(generator, *np.log(cfg.noise_range))))
        y = aug.add_noise(y, generator, sigma, 1.0)  # y is in units of the input's image_scale
    return y


def _tissue_contrast(mag: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Random intensities per k-means tissue class (:func:`mrdiff.augmentations.tissue_remap`)."""
    lo, hi = cfg.tissue_classes
    k = int(torch.randint(lo, hi + 1, (), generator=generator))
    inverted = _uniform(generator, 0, 1) < cfg.tissue_invert_prob
    values = aug.tissue_intensities(k, generator, inverted)
    soft = _uniform(generator, cfg.tissue_soft / 2, cfg.tissue_soft)
    return aug.tissue_remap(mag, values, soft=soft, texture=_uniform(generator, 0, 1))


def _deform(y: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Random affine and / or elastic warp of ``y`` ``(H, W)``, applied as one resampling."""
    matrix = displacement = None
    if cfg.affine_prob > 0 and _uniform(generator, 0, 1) < cfg.affine_prob:
        matrix = aug.affine_matrix(generator, cfg.affine_rotate, cfg.affine_shear, cfg.affine_aspect)
    if cfg.elastic_prob > 0 and _uniform(generator, 0, 1) < cfg.elastic_prob:
        shape = (y.shape[-2], y.shape[-1])
        displacement = aug.elastic_field(shape, generator, cfg.elastic_strength, cfg.elastic_knots)
    if matrix is None and displacement is None:
        return y
    return aug.warp(y, matrix, displacement)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Divide each image ``(B, H, W)`` by its ``mrdiff.scaling.image_scale``."""
    return x / image_scale(x)[:, None, None]


class SliceDataset:
    """All usable slices of a directory of prepared volumes, in memory (see :func:`load_slices`).

    Args:
        data_dir: directory of ``.h5`` volumes.
        resolution: square size the slices are cropped / padded to.
        min_rel_scale: drop slices below this fraction of their volume's largest mean magnitude.
    """

    def __init__(self, data_dir: str | Path, resolution: int, min_rel_scale: float = 0.1):
        cfg = DataConfig(resolution=resolution, min_rel_scale=min_rel_scale)
        self.images, self.names = load_slices(data_dir, cfg)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def to_channels(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Clean complex images ``(B, H, W)`` -> the network's real ``(B, 2, H, W)`` (real, imag) or, for a
    magnitude-only prior, ``(B, 1, H, W)`` magnitude.

    The conversion is the denoiser's (:func:`mrdiff.priors.precond.complex_to_channels`); only the
    input differs: a magnitude prior learns ``|x0|`` of clean images, while at sampling time it is
    handed the real part of a noisy state (the magnitude of noise would be biased).
    """
    return complex_to_channels(x.abs() if in_channels == 1 else x, in_channels)


def training_batch(
    data: SliceDataset, cfg: DataConfig, batch: int, in_channels: int, generator: torch.Generator
) -> torch.Tensor:
    """Random augmented, normalised batch drawn with ``generator`` (seeded per step and rank).

    Returns:
        real ``(batch, in_channels, R, R)`` images, each with image_scale 1 before channel split.
    """
    idx = torch.randint(len(data), (batch,), generator=generator)
    x = torch.stack([augment(data.images[int(i)], cfg, generator) for i in idx])
    return to_channels(normalise(x), in_channels)


def training_items(
    data: SliceDataset, cfg: DataConfig, generators: list[torch.Generator], in_channels: int
) -> torch.Tensor:
    """One random augmented, normalised image per generator: item b (its slice index, then its
    augmentation) is drawn from ``generators[b]`` alone.

    Returns:
        real ``(len(generators), in_channels, R, R)`` images, each with image_scale 1 before channel split.
    """
    idx = [int(torch.randint(len(data), (), generator=g)) for g in generators]
    x = torch.stack([augment(data.images[i], cfg, g) for i, g in zip(idx, generators)])
    return to_channels(normalise(x), in_channels)


def patch_count(cfg: DataConfig, batch: int, size: int) -> int:
    """Patches of ``size`` in a step: ``batch`` patches of the largest size, scaled to the same pixels."""
    return max(1, round(batch * (max(cfg.patch_sizes) / size) ** 2))


def cut_patches(
    x: torch.Tensor, cfg: DataConfig, size: int, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random ``size`` patches of one normalised square complex image ``(R, R)`` with a zero margin of
    ``cfg.patch_margin``, and their coordinate channels (``mrdiff.priors.patch``), randomly scaled
    and shifted by up to ``cfg.coord_jitter`` so the network cannot memorise where template anatomy
    sits (PaDIS; Hu et al., NeurIPS 2024, Sec. 3.2, uses exact positions).

    Returns:
        complex patches ``(n, size, size)`` and real coordinates ``(n, 2, size, size)``.
    """
    h, w = x.shape
    m = cfg.patch_margin
    padded = center_fit(x, h + 2 * m)
    j = cfg.coord_jitter
    scale = 1 + j * (2 * torch.rand(2, generator=generator) - 1)
    shift = j * (2 * torch.rand(2, generator=generator) - 1)
    tops = torch.randint(h + 2 * m - size + 1, (n,), generator=generator)
    lefts = torch.randint(w + 2 * m - size + 1, (n,), generator=generator)
    patches, coords = [], []
    for top, left in zip(tops.tolist(), lefts.tolist()):
        patches.append(padded[top : top + size, left : left + size])
        rows = torch.arange(top - m, top - m + size)
        cols = torch.arange(left - m, left - m + size)
        coords.append(coord_channels(rows, cols, h, w) * scale[:, None, None] + shift[:, None, None])
    return torch.stack(patches), torch.stack(coords)


def patch_size_for(cfg: DataConfig, generator: torch.Generator) -> int:
    """The patch size of a step, drawn from ``cfg.patch_sizes`` (one generator per step, shared by all
    processes)."""
    return cfg.patch_sizes[int(torch.randint(len(cfg.patch_sizes), (), generator=generator))]


def patch_items(
    data: SliceDataset, cfg: DataConfig, size: int, generators: list[torch.Generator], in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches for a patch prior: one augmented, normalised image per generator (its slice, its
    augmentation and where its patches lie all drawn from that generator alone, like
    :func:`training_items`), ``patch_count(cfg, cfg.patches_per_image, size)`` patches cut from each.
    Each image is normalised as a whole before cutting: the scale the prior sees in reconstruction.

    Returns:
        real patches ``(N, in_channels, P, P)`` and coordinates ``(N, 2, P, P)``, image by image.
    """
    k = patch_count(cfg, cfg.patches_per_image, size)
    parts = []
    for g in generators:
        i = int(torch.randint(len(data), (), generator=g))
        image = normalise(augment(data.images[i], cfg, g)[None])[0]
        parts.append(cut_patches(image, cfg, size, k, g))
    x = torch.cat([p for p, _ in parts])
    pos = torch.cat([c for _, c in parts])
    return to_channels(x, in_channels), pos.float()


def validation_batch(data: SliceDataset, n: int, in_channels: int) -> torch.Tensor:
    """``n`` evenly spaced validation slices, normalised, not augmented: ``(n, in_channels, R, R)``."""
    idx = torch.linspace(0, len(data) - 1, min(n, len(data))).round().long()
    return to_channels(normalise(data.images[idx]), in_channels)

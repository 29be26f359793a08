"""fastMRI-style HDF5 input (raw and prepared volumes, read slice by slice) and output.

Inputs follow the fastMRI layout (Zbontar et al., arXiv:1811.08839): ``kspace`` ``(S, H, W)``
single-coil or ``(S, C, H, W)`` multi-coil, optional ``mask``, targets ``reconstruction_rss`` /
``reconstruction_esc``, attributes and an ISMRMRD XML header. Outputs use the submission layout:
one file per volume with ``reconstruction`` float32 ``(S, h, w)``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from mrdiff.atomic import atomic_path
from mrdiff.errors import InputError

TARGET_KEYS = ("reconstruction_rss", "reconstruction_esc")


@dataclass(frozen=True)
class VolumeInfo:
    """What a volume holds, read without loading k-space.

    Attributes:
        path: the file.
        shape: k-space shape as ``(S, C, H, W)`` (``C = 1`` for single-coil files).
        single_coil: True when the file stores ``(S, H, W)`` k-space.
        recon_size: ``(h, w)`` of the output image (target shape, else ISMRMRD reconSpace, else H, W).
        mask: the file's acquired mask as bool ``(W,)`` or ``(H, W)``, or None (fully sampled).
        target_key: name of the target dataset, or None.
        attrs: the file's attributes as plain Python values.
    """

    path: Path
    shape: tuple[int, int, int, int]
    single_coil: bool
    recon_size: tuple[int, int]
    mask: torch.Tensor | None
    target_key: str | None
    attrs: dict = field(default_factory=dict)


def list_volumes(path: str | Path) -> list[Path]:
    """The ``.h5`` files of a directory (sorted), or ``[path]`` for a file."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".hdf5") and not q.name.startswith("."))
        if not files:
            raise InputError(f"{p}: no .h5 files in this directory")
        return files
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    return [p]


def _plain(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def parse_recon_size(header: str | bytes) -> tuple[int, int] | None:
    """``(x, y)`` of the ISMRMRD ``reconSpace/matrixSize``, or None if absent or malformed."""
    try:
        root = ET.fromstring(header)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.split("}")[-1] == "reconSpace":
            size = {c.tag.split("}")[-1]: c for c in el.iter()}
            try:
                return int(size["x"].text), int(size["y"].text)
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _read_mask(f: h5py.File, path: Path, H: int, W: int) -> torch.Tensor | None:
    """The file's ``mask`` as bool; it must be boolean or hold only 0 and 1 (a float mask of sampling
    probabilities or weights would otherwise count every non-zero line as measured)."""
    if "mask" not in f:
        return None
    m = np.asarray(f["mask"][()])
    if m.shape not in ((W,), (H, W)):
        raise InputError(f"{path}: mask shape {m.shape} does not match k-space (H, W) = ({H}, {W})")
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        odd = m[~np.isin(m, (0, 1))]
        raise InputError(
            f"{path}: mask must hold only 0 and 1 (true/false), found {odd.size} other value(s), "
            f"e.g. {odd.flat[0]!r}"
        )
    return torch.from_numpy(m != 0)


def open_volume(path: str | Path) -> VolumeInfo:
    """Validate a fastMRI-style file and describe it (k-space is not loaded).

    Raises:
        InputError: not HDF5, truncated, no ``kspace``, wrong rank/dtype, bad mask.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err.__class__.__name__})") from None
    with f:
        if "kspace" not in f:
            raise InputError(f"{path}: no 'kspace' dataset")
        ks = f["kspace"]
        if ks.ndim not in (3, 4):
            raise InputError(f"{path}: kspace must be (S, H, W) or (S, C, H, W), got shape {ks.shape}")
        if not np.issubdtype(ks.dtype, np.complexfloating):
            raise InputError(f"{path}: kspace must be complex, got {ks.dtype}")
        single = ks.ndim == 3
        S, C, H, W = (ks.shape[0], 1, *ks.shape[1:]) if single else ks.shape
        if min(S, C, H, W) < 1:
            raise InputError(f"{path}: kspace is empty, shape {ks.shape}")
        mask = _read_mask(f, path, H, W)
        target_key = next((k for k in TARGET_KEYS if k in f), None)
        attrs = {k: _plain(v) for k, v in f.attrs.items()}
        recon = tuple(f[target_key].shape[-2:]) if target_key else None
        if recon is None and "ismrmrd_header" in f:
            recon = parse_recon_size(f["ismrmrd_header"][()])
        recon = (min(H, recon[0]), min(W, recon[1])) if recon else (H, W)
    return VolumeInfo(path, (S, C, H, W), single, recon, mask, target_key, attrs)


@dataclass(frozen=True)
class SliceData:
    """One slice: k-space ``(C, H, W)`` complex64, target ``(h, w)`` float32 or None."""

    kspace: torch.Tensor
    target: torch.Tensor | None


def read_slice(info: VolumeInfo, index: int) -> SliceData:
    """Read one slice (memory bounded by the slice) and check it is finite and non-zero; a slice whose
    stored bytes are damaged (e.g. a compressed chunk that no longer decodes) is an InputError."""
    try:
        with h5py.File(info.path, "r") as f:
            k = np.asarray(f["kspace"][index])
            target = np.asarray(f[info.target_key][index], np.float32) if info.target_key else None
    except (OSError, KeyError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else err.__class__.__name__
        raise InputError(f"{info.path}: cannot read slice {index} ({reason})") from None
    if info.single_coil:
        k = k[None]
    if not np.isfinite(k).all():
        raise InputError(f"{info.path}: slice {index} has NaN or Inf k-space values")
    if not np.any(k):
        raise InputError(f"{info.path}: slice {index} has all-zero k-space")
    t = None if target is None else torch.from_numpy(target)
    return SliceData(torch.from_numpy(k.astype(np.complex64)), t)


def center_crop(x: torch.Tensor | np.ndarray, size: tuple[int, int]):
    """Centre crop of the last two axes to ``size``: fastMRI's ``data.transforms.center_crop`` rule
    (start ``(H - h) // 2``; tests/test_io.py checks they agree), and the project's only crop helper.

    Ours rather than fastMRI's because importing ``fastmri`` costs seconds that ``mrdiff info`` must not
    pay, and because it names the shapes when the crop does not fit (fastMRI: "Invalid shapes.").
    """
    h, w = size
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"cannot crop {(H, W)} to {size}")
    h0, w0 = (H - h) // 2, (W - w) // 2
    return x[..., h0 : h0 + h, w0 : w0 + w]


def write_reconstruction(
    path: str | Path,
    reconstruction: np.ndarray,
    attrs: dict,
    extras: dict[str, np.ndarray] | None = None,
) -> None:
    """Atomically write a fastMRI submission file.

    Args:
        path: output ``.h5`` path (written via a temporary file and a rename).
        reconstruction: float ``(S, h, w)`` magnitude images.
        attrs: plain values (dicts and lists are stored as JSON strings).
        extras: optional further datasets (e.g. ``std`` ``(S, h, w)``, ``residual`` ``(S,)``).
    """
    if Path(path).is_file() and _holds_kspace(path):
        raise InputError(
            f"refusing to overwrite {path}: it holds k-space (an input file, not a reconstruction)"
        )
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=np.asarray(reconstruction, np.float32))
            for name, data in (extras or {}).items():
                f.create_dataset(name, data=np.asarray(data))
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)


def _holds_kspace(path: str | Path) -> bool:
    """True if ``path`` is an HDF5 file with a ``kspace`` dataset (raw data that must never be replaced)."""
    try:
        with h5py.File(path, "r") as f:
            return "kspace" in f
    except OSError:
        return False


def read_reconstruction(path: str | Path) -> np.ndarray:
    """The ``reconstruction`` dataset of a submission file, with a clear error if unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["reconstruction"][()])
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: cannot read 'reconstruction' ({err.__class__.__name__})") from None

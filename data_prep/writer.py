"""Streaming writer of one fastMRI-style HDF5 volume (contract 1 of the team brief).

Datasets grow one slice at a time (chunked per slice), so memory is bounded by a slice; the
volume attributes ``max`` and ``norm`` (fastMRI: maximum and L2 norm of the target volume) are
accumulated on the way and written when the volume is finished.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np

HEADER = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
    "<encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize></encodedSpace>"
    "<reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></reconSpace>"
    "<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{wmax}</maximum>"
    "<center>{wc}</center></kspace_encoding_step_1></encodingLimits>"
    "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
)


def ismrmrd_header(H: int, W: int, h: int | None = None, w: int | None = None) -> str:
    """Minimal ISMRMRD XML with encodedSpace ``H x W``, reconSpace ``h x w`` (default ``H x W``) and the
    phase-encode limits (all ``W`` columns, centre ``W // 2``) that ``fastmri.data.SliceDataset`` reads."""
    return HEADER.format(H=H, W=W, h=H if h is None else h, w=W if w is None else w, wmax=W - 1, wc=W // 2)


class VolumeWriter:
    """Append slices to an open HDF5 file; ``finish`` writes header and attributes.

    Args:
        f: an ``h5py.File`` opened for writing (a temporary path from ``atomic_path``).
        slice_shapes: dataset name -> ``(shape of one slice, numpy dtype)``; each dataset becomes
            ``(S, *shape)``. ``kspace`` is required, except in an images-only training file, which has
            ``reconstruction_rss``; ``reconstruction_rss`` drives ``max``/``norm``.
        compress: gzip (level 9, with byte shuffling) every dataset; used for the bundled demo.
    """

    def __init__(
        self, f: h5py.File, slice_shapes: dict[str, tuple[tuple[int, ...], type]], compress: bool = False
    ):
        if "kspace" not in slice_shapes and "reconstruction_rss" not in slice_shapes:
            raise ValueError("a volume needs a 'kspace' or (images only) a 'reconstruction_rss' dataset")
        self.f = f
        self.filters = {"compression": "gzip", "compression_opts": 9, "shuffle": True} if compress else {}
        self.count = 0
        self.max = 0.0
        self.sumsq = 0.0
        for name, (shape, dtype) in slice_shapes.items():
            f.create_dataset(
                name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                chunks=(1, *shape),
                dtype=dtype,
                track_times=False,
                **self.filters,
            )

    def add(self, **slices: np.ndarray) -> None:
        """Append one slice of every dataset (same names as at construction)."""
        missing = set(self.f.keys()) - set(slices)
        if missing:
            raise ValueError(f"slice is missing datasets {sorted(missing)}")
        for name, value in slices.items():
            ds = self.f[name]
            ds.resize(self.count + 1, axis=0)
            ds[self.count] = np.asarray(value, dtype=ds.dtype)
        target = slices.get("reconstruction_rss")
        if target is None:
            target = zero_filled_rss(slices["kspace"])
        self.max = max(self.max, float(np.max(target)))
        self.sumsq += float(np.sum(np.asarray(target, np.float64) ** 2))
        self.count += 1

    def finish(self, header: str, attrs: dict, mask: np.ndarray | None = None) -> None:
        """Write ``ismrmrd_header``, the optional ``mask`` and the attributes (dicts/lists as JSON)."""
        if self.count == 0:
            raise ValueError("no slices were written")
        self.f.create_dataset("ismrmrd_header", data=header, track_times=False)
        if mask is not None:
            self.f.create_dataset("mask", data=np.asarray(mask, bool), track_times=False, **self.filters)
        self.f.attrs["max"] = self.max
        self.f.attrs["norm"] = math.sqrt(self.sumsq)
        for key, value in attrs.items():
            self.f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def zero_filled_rss(kspace: np.ndarray) -> np.ndarray:
    """RSS of the centred inverse FFT of k-space ``(C, H, W)`` or ``(H, W)`` -> ``(H, W)`` float32."""
    k = np.asarray(kspace)
    k = k[None] if k.ndim == 2 else k
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.sqrt((np.abs(img) ** 2).sum(0)).astype(np.float32)


def read_entry(path: Path) -> tuple[str, dict] | None:
    """``(prep_key, manifest entry)`` stored in a finished volume, or None if absent/unreadable."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["prep_key"]), json.loads(f.attrs["prep_entry"])
    except (OSError, KeyError, ValueError):
        return None

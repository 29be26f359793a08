"""Readers that turn scans on disk into volumes: magnitude images, raw k-space or fastMRI files.

Every reader raises ``mrdiff.errors.InputError`` with the file name when a source cannot be used.
Magnitude volumes are held in memory in their stored dtype (small: one 3-D scan); k-space arrays
are memory-mapped where the format allows, and fastMRI HDF5 files are read slice by slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mrdiff.errors import InputError

ORIENTATIONS = ("sagittal", "coronal", "axial")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
KSPACE_SUFFIXES = (".npy", ".mat", ".bin")
H5_SUFFIXES = (".h5", ".hdf5")
AGILE_HEADER_BYTES = 20


@dataclass
class MagnitudeVolume:
    """Real magnitude slices ``(S, H, W)`` of one source (to be simulated).

    Attributes:
        name: output volume stem.
        source: the source file or folder.
        source_id: seed namespace, e.g. ``ch2.nii.gz:axial`` (file name, not path, so seeds do not
            depend on where the data live).
        array: ``(S, H, W)`` real array (any dtype), slice axis first, rows top to bottom.
        ref: intensity reference (99th percentile of the volume); slices are divided by it.
        acquisition: free text describing the source contrast/orientation.
    """

    name: str
    source: Path
    source_id: str
    array: np.ndarray
    ref: float
    acquisition: str
    kind: str = field(default="magnitude", init=False)

    def slice(self, index: int) -> np.ndarray:
        """Slice ``index`` as float32 ``(H, W)``, divided by ``ref``, negatives clipped to 0."""
        return np.clip(np.asarray(self.array[index], np.float32) / self.ref, 0, None)

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.array.shape[0])


@dataclass
class KspaceVolume:
    """Raw k-space ``(S, C, H, W)`` of one source, possibly undersampled (zeros off ``mask``)."""

    name: str
    source: Path
    source_id: str
    kspace: np.ndarray
    mask: np.ndarray | None
    acquisition: str
    #: ``(h, w)`` of the reconstruction when k-space is readout-oversampled (fastMRI: the target is the
    #: centre crop of the full-FOV RSS); None: the whole ``H x W`` field of view
    recon_shape: tuple[int, int] | None = None
    kind: str = field(default="kspace", init=False)

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.kspace.shape[0])


@dataclass
class FastMRIVolume:
    """A fastMRI raw HDF5 file (passed through slice by slice)."""

    name: str
    source: Path
    source_id: str
    acquisition: str = "fastMRI raw"
    kind: str = field(default="fastmri", init=False)


Volume = MagnitudeVolume | KspaceVolume | FastMRIVolume


def stem(path: Path) -> str:
    """File name without ``.nii.gz``/``.npy``/... suffixes."""
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *IMAGE_SUFFIXES, *KSPACE_SUFFIXES, *H5_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _reference(array: np.ndarray, path: Path) -> float:
    if array.size == 0 or not np.isfinite(array).all():
        raise InputError(f"{path}: image data are empty or contain NaN/Inf")
    ref = float(np.percentile(array, 99))
    if ref <= 0:
        ref = float(array.max())
    if ref <= 0:
        raise InputError(f"{path}: image is all zero")
    return ref


def orient(array: np.ndarray, orientation: str) -> np.ndarray:
    """Slices ``(S, H, W)`` of an RAS-ordered volume ``(X, Y, Z)`` in one orientation.

    Each slice is rotated by 90 degrees so that anterior (axial) or superior (sagittal, coronal)
    is at the top. Returns a view (no copy).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    axis = ORIENTATIONS.index(orientation)
    moved = np.moveaxis(array, axis, 0)  # (S, a, b) with b pointing up (A for axial, S otherwise)
    return np.rot90(moved, k=1, axes=(1, 2))


def read_nifti(path: Path, orientations: tuple[str, ...] = ORIENTATIONS) -> list[MagnitudeVolume]:
    """A NIfTI volume as one magnitude volume per orientation (reoriented to RAS first)."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise InputError(f"{path}: not a readable NIfTI file ({err.__class__.__name__}: {err})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or np.iscomplexobj(data):
        raise InputError(f"{path}: expected a real 3-D NIfTI volume, got shape {data.shape} {data.dtype}")
    ref = _reference(data, path)
    return [
        MagnitudeVolume(f"{stem(path)}-{o}", path, f"{path.name}:{o}", orient(data, o), ref, f"NIfTI {o}")
        for o in orientations
    ]


def _dicom_frames(ds, path: Path) -> np.ndarray:
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as err:
        raise InputError(f"{path}: DICOM pixel data unreadable ({err.__class__.__name__})") from None
    slope, intercept = float(getattr(ds, "RescaleSlope", 1)), float(getattr(ds, "RescaleIntercept", 0))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and frames == 1:
        pixels = pixels[..., :3].mean(-1)
    pixels = pixels.reshape(-1, *pixels.shape[-2:]) if pixels.ndim >= 2 else pixels
    if pixels.ndim != 3:
        raise InputError(f"{path}: unexpected DICOM pixel array shape {pixels.shape}")
    return pixels.astype(np.float32) * slope + intercept


def _dicom_position(ds) -> float:
    pos, orient_ = getattr(ds, "ImagePositionPatient", None), getattr(ds, "ImageOrientationPatient", None)
    if pos is not None and orient_ is not None and len(orient_) == 6:
        normal = np.cross(np.asarray(orient_[:3], float), np.asarray(orient_[3:], float))
        return float(np.dot(normal, np.asarray(pos, float)))
    return float(getattr(ds, "InstanceNumber", 0) or 0)


def read_dicom(path: Path) -> MagnitudeVolume:
    """A DICOM file (single or multi-frame) or a folder holding one series, sorted along the normal."""
    import pydicom

    files = (
        sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if path.is_dir()
        else [path]
    )
    items = []
    for f in files:
        if f.suffix.lower() not in ("", ".dcm", ".ima") or f.name in ("DICOMDIR",):
            continue
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as err:
            if path.is_dir() and f.suffix == "":
                continue  # e.g. LICENSE or README next to the series
            raise InputError(f"{f}: not a readable DICOM file ({err.__class__.__name__})") from None
        items.append((_dicom_position(ds), f.name, _dicom_frames(ds, f)))
    if not items:
        raise InputError(f"{path}: no DICOM files found")
    items.sort(key=lambda t: (t[0], t[1]))
    shapes = {it[2].shape[1:] for it in items}
    if len(shapes) != 1:
        raise InputError(f"{path}: DICOM images of different sizes {sorted(shapes)} in one series")
    array = np.concatenate([it[2] for it in items])
    name = stem(path) if path.is_file() else path.name
    return MagnitudeVolume(name, path, path.name, array, _reference(array, path), "DICOM")


def read_image(path: Path) -> MagnitudeVolume:
    """A PNG or (multi-page) TIFF as magnitude slices; colour images become luminance."""
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            frames = [
                np.asarray(f.convert("F") if f.mode not in ("I;16", "I", "F") else f, np.float32)
                for f in ImageSequence.Iterator(im)
            ]
    except Exception as err:
        raise InputError(f"{path}: not a readable image ({err.__class__.__name__}: {err})") from None
    if len({f.shape for f in frames}) != 1:
        raise InputError(f"{path}: TIFF pages of different sizes")
    array = np.stack(frames)
    return MagnitudeVolume(stem(path), path, path.name, array, _reference(array, path), "image")


def kspace_mask(kspace: np.ndarray) -> np.ndarray | None:
    """Acquired positions ``(H, W)`` of k-space ``(S, C, H, W)``: non-zero in any coil and slice.

    Returns None when every position is acquired (fully sampled data need no mask).
    """
    mask = np.zeros(kspace.shape[-2:], dtype=bool)
    for s in range(kspace.shape[0]):
        mask |= np.any(np.asarray(kspace[s]) != 0, axis=0)
    return None if mask.all() else mask


def as_kspace_volume(array: np.ndarray, path: Path, acquisition: str) -> KspaceVolume:
    """Validate a k-space array ``(C, H, W)`` or ``(S, C, H, W)`` and wrap it with its mask."""
    if not np.iscomplexobj(array):
        raise InputError(f"{path}: k-space must be complex, got {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or min(array.shape) < 1:
        raise InputError(f"{path}: k-space must be (C, H, W) or (S, C, H, W), got shape {array.shape}")
    if not all(np.isfinite(np.asarray(array[s])).all() for s in range(array.shape[0])):
        raise InputError(f"{path}: k-space contains NaN or Inf")
    mask = kspace_mask(array)
    if mask is not None and not mask.any():
        raise InputError(f"{path}: k-space is all zero")
    return KspaceVolume(stem(path), path, path.name, array, mask, acquisition)


def read_npy(path: Path) -> KspaceVolume:
    """A ``.npy`` complex k-space array ``(C, H, W)`` or ``(S, C, H, W)`` (memory-mapped)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise InputError(f"{path}: not a readable .npy array ({err.__class__.__name__}: {err})") from None
    return as_kspace_volume(array, path, "raw k-space (npy)")


def read_twix_npy(path: Path, oversampling: int = 2) -> KspaceVolume:
    """A TWIX-ordered ``.npy`` k-space ``(lines, coils, readout)`` (``twixtools.map_twix``, oversampling
    kept) as fastMRI ``(1, C, readout, lines)``: readout along rows, phase encodes along columns (the
    axis masks undersample), and the reconstruction the central ``readout / oversampling`` rows."""
    vol = read_npy(path)
    array = np.asarray(vol.kspace[0])  # read_npy made (1, lines, coils, readout)
    if array.ndim != 3:
        raise InputError(f"{path}: expected TWIX k-space (lines, coils, readout), got {array.shape}")
    kspace = np.ascontiguousarray(np.transpose(array, (1, 2, 0)))[None]
    out = as_kspace_volume(kspace, path, "raw k-space (TWIX npy)")
    out.recon_shape = (kspace.shape[2] // oversampling, kspace.shape[3])
    return out


def read_mat(path: Path, key: str | None = None) -> KspaceVolume:
    """A MATLAB file's complex k-space (``key``, else the largest complex array); v5 or v7.3 (HDF5)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        import scipy.io

        arrays = {k: v for k, v in scipy.io.loadmat(str(path)).items() if isinstance(v, np.ndarray)}
    except NotImplementedError:  # v7.3 files are HDF5
        arrays = _read_mat73(path)
    except Exception as err:
        raise InputError(f"{path}: not a readable MAT file ({err.__class__.__name__}: {err})") from None
    candidates = {k: v for k, v in arrays.items() if np.iscomplexobj(v) and v.ndim in (3, 4)}
    if key is not None:
        if key not in arrays:
            raise InputError(f"{path}: no variable {key!r} (has {sorted(arrays)})")
        candidates = {key: arrays[key]}
    if not candidates:
        raise InputError(f"{path}: no complex 3-D/4-D k-space variable (has {sorted(arrays)})")
    name = max(candidates, key=lambda k: candidates[k].size)
    return as_kspace_volume(np.ascontiguousarray(candidates[name]), path, f"raw k-space (mat:{name})")


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    a = v[()]
                    if a.dtype.names and {"real", "imag"} <= set(a.dtype.names):
                        a = a["real"] + 1j * a["imag"]
                    out[k] = np.asarray(a).transpose()  # MATLAB is column-major
    except Exception as err:
        raise InputError(f"{path}: not a readable MAT file ({err.__class__.__name__})") from None
    return out


def read_agile(path: Path) -> KspaceVolume:
    """AGILE raw ``.bin``: five uint32 words (rows, cols, coils, bytes, is_complex), then complex64."""
    raw = path.read_bytes()
    if len(raw) < AGILE_HEADER_BYTES:
        raise InputError(f"{path}: too short for an AGILE .bin header")
    rows, cols, coils, nbytes, is_complex = np.frombuffer(raw[:AGILE_HEADER_BYTES], "<u4").tolist()
    if nbytes != 4 or is_complex != 1:
        raise InputError(f"{path}: AGILE header says {nbytes}-byte complex={is_complex}; need 4-byte complex")
    expected = rows * cols * coils * 8
    if len(raw) - AGILE_HEADER_BYTES != expected:
        raise InputError(
            f"{path}: AGILE header ({rows}x{cols}x{coils}) needs {expected} data bytes, "
            f"file has {len(raw) - AGILE_HEADER_BYTES} (truncated or not AGILE)"
        )
    array = np.frombuffer(raw[AGILE_HEADER_BYTES:], "<c8").reshape(coils, rows, cols)
    return as_kspace_volume(array, path, "raw k-space (AGILE bin)")


def check_fastmri(path: Path) -> FastMRIVolume:
    """A fastMRI HDF5 file: must open and hold a complex ``kspace`` of rank 3 or 4."""
    try:
        with h5py.File(path, "r") as f:
            ks = f.get("kspace")
            if not isinstance(ks, h5py.Dataset) or ks.ndim not in (3, 4):
                raise InputError(f"{path}: no 'kspace' dataset of shape (S, H, W) or (S, C, H, W)")
            if not np.issubdtype(ks.dtype, np.complexfloating) or ks.shape[0] < 1:
                raise InputError(f"{path}: 'kspace' must be complex and non-empty, got {ks.dtype} {ks.shape}")
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err.__class__.__name__})") from None
    return FastMRIVolume(stem(path), path, path.name)


def read_source(path: Path, orientations: tuple[str, ...] = ORIENTATIONS) -> list[Volume]:
    """Dispatch one file (or a DICOM series folder) on its suffix; returns its volumes."""
    name = path.name.lower()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        return [read_dicom(path)]
    if name.endswith(NIFTI_SUFFIXES):
        return list(read_nifti(path, orientations))
    if name.endswith(IMAGE_SUFFIXES):
        return [read_image(path)]
    if name.endswith(".npy"):
        return [read_npy(path)]
    if name.endswith(".mat"):
        return [read_mat(path)]
    if name.endswith(".bin"):
        return [read_agile(path)]
    if name.endswith(H5_SUFFIXES):
        return [check_fastmri(path)]
    if name.endswith(".dcm") or "." not in name:
        return [read_dicom(path)]
    raise InputError(
        f"{path}: unknown input type (expected NIfTI, DICOM, PNG/TIFF, NPY, MAT, AGILE .bin, HDF5)"
    )


def expand(paths: list[Path]) -> list[Path]:
    """Inputs to read: files as given; folders expanded to their files, DICOM-only folders kept whole."""
    out: list[Path] = []
    for p in paths:
        if not p.is_dir():
            out.append(p)
            continue
        files = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
        dicoms = [q for q in files if q.suffix.lower() in (".dcm", ".ima")]
        known = (*NIFTI_SUFFIXES, *IMAGE_SUFFIXES, *KSPACE_SUFFIXES, *H5_SUFFIXES)
        others = [q for q in files if q.name.lower().endswith(known)]
        if dicoms and len(dicoms) > 1:
            out.append(p)
        else:
            out.extend(dicoms)
        out.extend(others)
        out.extend(expand(sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))))
    return out

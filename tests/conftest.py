"""Shared fixtures: tiny mock fastMRI HDF5 files built in ``tmp_path`` (no downloads, milliseconds).

``make_h5(name, layout=..., ...)`` writes one file and returns its path. Layouts:

* ``"singlecoil"``: raw fastMRI single-coil, ``kspace`` ``(S, H, W)``, ``reconstruction_esc``.
* ``"multicoil"``: raw fastMRI multi-coil, ``kspace`` ``(S, C, H, W)``, ``reconstruction_rss``.
* ``"prepared"``: our prepared format (contract 1): adds ``image``, ``maps`` and A's attributes.
* ``"undersampled"``: prepared real undersampled data: zeros off a ``mask`` ``(H, W)``, no target.

The images are a Shepp-Logan phantom with a smooth phase, coils are sigpy birdcage maps normalised to
``sum_c |S_c|^2 = 1``; everything is seeded, so files are identical across runs.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import sigpy.mri
import torch
from fastmri.data.transforms import center_crop  # the reference rule, independent of mrdiff.io
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from mrdiff.fft import fft2c, ifft2c

HEADER = (
    '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
    "<encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize></encodedSpace>"
    "<reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></reconSpace>"
    "</encoding></ismrmrdHeader>"
)


def phantom(slices: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    """Complex phantom images ``(S, H, W)`` complex64: Shepp-Logan magnitude, smooth random phase."""
    rng = np.random.default_rng(seed)
    base = resize(shepp_logan_phantom(), (H, W), anti_aliasing=True).astype(np.float32)
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    out = []
    for s in range(slices):
        a, b, c = rng.uniform(-1.5, 1.5, 3)
        out.append((base * (1 + 0.1 * s)) * np.exp(1j * (a * xx + b * yy + c * xx * yy)))
    return np.stack(out).astype(np.complex64)


def coil_maps(coils: int, H: int, W: int) -> np.ndarray:
    """Birdcage maps ``(C, H, W)`` complex64 with ``sum_c |S_c|^2 = 1``."""
    maps = sigpy.mri.birdcage_maps((coils, H, W), r=1.2).astype(np.complex64)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))).astype(np.complex64)


def simulate(slices=2, coils=4, H=32, W=32, noise=1e-3, seed=0):
    """Noiseless image, maps, noisy k-space ``(S, C, H, W)`` and the RSS target ``(S, H, W)``."""
    x = phantom(slices, H, W, seed)
    maps = coil_maps(coils, H, W)
    coil_imgs = torch.from_numpy(maps[None] * x[:, None])
    k = fft2c(coil_imgs).numpy()
    rng = np.random.default_rng(seed + 1)
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    target = torch.from_numpy(coil_imgs.numpy()).abs().square().sum(1).sqrt().numpy()
    return x, np.broadcast_to(maps, (slices, *maps.shape)).copy(), k.astype(np.complex64), target


def write_mock(
    path: Path,
    layout: str = "multicoil",
    slices: int = 2,
    coils: int = 4,
    H: int = 32,
    W: int = 32,
    recon: tuple[int, int] | None = None,
    mask_1d: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write one mock file (see the module docstring for the layouts) and return its path."""
    single = layout == "singlecoil"
    x, maps, k, target = simulate(slices, 1 if single else coils, H, W, seed=seed)
    h, w = recon or (H, W)
    with h5py.File(path, "w") as f:
        f.attrs["acquisition"] = "MOCK"
        f.attrs["patient_id"] = f"mock-{seed}"
        f.create_dataset("ismrmrd_header", data=HEADER.format(H=H, W=W, h=h, w=w))
        if single:
            esc = np.abs(ifft2c(torch.from_numpy(k[:, 0])).numpy())
            f.create_dataset("kspace", data=k[:, 0])
            f.create_dataset("reconstruction_esc", data=center_crop(esc, (h, w)).astype(np.float32))
        elif layout == "undersampled":
            mask = np.zeros((H, W), bool)
            mask[:, ::2] = True
            mask[:, W // 2 - 4 : W // 2 + 4] = True
            f.create_dataset("kspace", data=(k * mask).astype(np.complex64))
            f.create_dataset("mask", data=mask)
        else:
            f.create_dataset("kspace", data=k)
            f.create_dataset("reconstruction_rss", data=center_crop(target, (h, w)).astype(np.float32))
        if mask_1d is not None:
            f.create_dataset("mask", data=np.asarray(mask_1d))
        if layout in ("prepared", "undersampled"):
            if layout == "prepared":
                f.create_dataset("image", data=x)
                f.create_dataset("maps", data=maps)
            f.attrs.update(
                {"max": float(target.max()), "norm": float(np.linalg.norm(target)), "source": "mock"},
            )
            f.attrs.update(
                {"licence": "CC0", "split": "val", "simulated": True, "snr_db": 40.0, "seed": seed}
            )
    return path


@pytest.fixture
def make_h5(tmp_path):
    """Factory fixture: ``make_h5("name.h5", layout="multicoil", **kwargs) -> Path`` in ``tmp_path``."""

    def factory(name: str = "file_mc.h5", **kwargs) -> Path:
        return write_mock(tmp_path / name, **kwargs)

    return factory


@pytest.fixture
def multicoil_h5(make_h5) -> Path:
    """Raw fastMRI-style multi-coil file: 2 slices, 4 coils, 32x32."""
    return make_h5("mock_multicoil.h5", layout="multicoil")


@pytest.fixture
def singlecoil_h5(make_h5) -> Path:
    """Raw fastMRI-style single-coil file: 2 slices, 32x32, ESC target cropped to 24x24."""
    return make_h5("mock_singlecoil.h5", layout="singlecoil", recon=(24, 24))


@pytest.fixture
def prepared_h5(make_h5) -> Path:
    """Prepared-format file (contract 1) with image, maps and attributes."""
    return make_h5("mock_prepared.h5", layout="prepared")


@pytest.fixture
def undersampled_h5(make_h5) -> Path:
    """Prepared real-undersampled file: zeros off a stored (H, W) mask, no target."""
    return make_h5("mock_undersampled.h5", layout="undersampled")


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep tests light on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""Rectangular, readout-oversampled k-space (`mrdiff prep --kspace-shape`), on a 64x40 grid -> 32x32 targets.

The fastMRI multi-coil brain convention at a small size: ``reconstruction_rss`` is the centre crop of the
RSS of the k-space's coil images (``fastmri.data.transforms.center_crop``), the object fills that crop,
and the oversampled margin holds noise only, at the stated SNR.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from fastmri.data.transforms import center_crop
from PIL import Image

from data_prep.simulate import SimulationConfig, simulate_slice
from mrdiff.fft import ifft2c
from mrdiff.io import open_volume
from mrdiff.noise import make_generator
from recon.cli import main as cli_main

N, H, W, C = 32, 64, 40, 4


def head(shape=(50, 40)) -> np.ndarray:
    """A textured ellipse filling most of its frame, float32 in [0, 1]."""
    yy, xx = np.mgrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    texture = np.random.default_rng(0).uniform(0.5, 1.0, shape)
    return (((xx**2 + yy**2) < 0.8) * texture).astype(np.float32)


def coil_rss(kspace: np.ndarray) -> np.ndarray:
    """RSS of the coil images of k-space ``(C, H, W)``."""
    return np.sqrt((np.abs(ifft2c(torch.from_numpy(kspace)).numpy()) ** 2).sum(0))


def simulate(snr_db: float, kspace_shape=(H, W)):
    cfg = SimulationConfig(size=N, coils=C, snr_db=snr_db, kspace_shape=kspace_shape)
    return simulate_slice(head(), cfg, make_generator(5))


def test_shapes_and_fastmri_crop_convention():
    clean = simulate(300.0)
    assert clean.kspace.shape == (C, H, W) and clean.maps.shape == (C, H, W)
    assert clean.rss.shape == (N, N) and clean.image.shape == (N, N)
    np.testing.assert_allclose(clean.rss, center_crop(coil_rss(clean.kspace), (N, N)), atol=1e-5)
    coil_images = ifft2c(torch.from_numpy(clean.kspace)).numpy()
    combined = (clean.maps.conj() * coil_images).sum(0)
    np.testing.assert_allclose(clean.image, center_crop(combined, (N, N)), atol=1e-5)
    full = coil_rss(clean.kspace)
    outside = full.copy()
    outside[(H - N) // 2 : (H + N) // 2, (W - N) // 2 : (W + N) // 2] = 0
    assert outside.max() < 0.05 * full.max()  # the object lies in the crop (band-limit ringing only)


def test_same_object_as_the_square_grid():
    """The oversampled grid sees the object of the square simulation (same seed, same phase draws)."""
    rect, square = simulate(300.0).image, simulate(300.0, None).image
    assert np.linalg.norm(rect - square) / np.linalg.norm(square) < 0.05


def test_snr_in_the_oversampled_margin():
    """Rows outside the crop hold noise only: std per real component sigma, and the SNR as stated."""
    noisy, clean = simulate(20.0), simulate(300.0)
    np.testing.assert_array_equal(noisy.rss, clean.rss)  # same seed: same truth
    margin = ifft2c(torch.from_numpy(noisy.kspace)).numpy()[:, : (H - N) // 2 - 4]
    for part in (margin.real, margin.imag):
        assert abs(part.std() / noisy.sigma - 1) < 0.1
    signal = noisy.rss[noisy.rss > 0.1 * noisy.rss.max()].mean()
    assert np.isclose(20 * np.log10(signal / noisy.sigma), 20.0, atol=1e-3)


def test_prep_cli_writes_a_fastmri_shaped_file(tmp_path):
    Image.fromarray((head() * 200).astype(np.uint8)).save(tmp_path / "slice.png")
    out = tmp_path / "out"
    argv = ["prep", str(tmp_path / "slice.png"), "--out", str(out), "--size", str(N), "--coils", str(C)]
    assert cli_main([*argv, "--kspace-shape", f"{H}x{W}", "--min-foreground", "0", "--no-progress"]) == 0
    path = out / "train" / "slice.h5"
    with h5py.File(path) as f:
        assert f["kspace"].shape == (1, C, H, W) and f["maps"].shape == (1, C, H, W)
        assert f["reconstruction_rss"].shape == (1, N, N) and f["image"].shape == (1, N, N)
        k, target = f["kspace"][0], f["reconstruction_rss"][0]
    assert open_volume(path).recon_size == (N, N)
    noisy_rss = center_crop(coil_rss(k), (N, N))
    assert np.linalg.norm(noisy_rss - target) / np.linalg.norm(target) < 0.1  # 30 dB noise only
    recon = tmp_path / "zf.h5"
    assert cli_main(["recon", str(path), "--method", "zf", "--out", str(recon), "--no-heldout"]) == 0
    with h5py.File(recon) as f:
        assert f["reconstruction"].shape == (1, N, N)


@pytest.mark.parametrize("shape", ["64", "16x40", "64x40x2", "ax40"])
def test_bad_kspace_shape_is_refused(tmp_path, shape, capsys):
    Image.fromarray((head() * 200).astype(np.uint8)).save(tmp_path / "slice.png")
    argv = ["prep", str(tmp_path / "slice.png"), "--out", str(tmp_path / "o"), "--size", str(N)]
    assert cli_main([*argv, "--kspace-shape", shape]) == 2
    assert "--kspace-shape" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_maps_cache_read_only_is_not_filled(multicoil_h5):
    """`mrdiff recon` passes a read-only cache: memory must not grow with the slices reconstructed."""
    from types import MappingProxyType

    from mrdiff.pipeline import MethodSpec, reconstruct_volume

    info, filled = open_volume(multicoil_h5), {}
    reconstruct_volume(info, MethodSpec("zf"), maps_cache=filled)
    assert len(filled) == 2  # mrdiff bench shares maps between methods this way
    frozen = MappingProxyType({})
    result = reconstruct_volume(info, MethodSpec("zf"), maps_cache=frozen)
    assert len(frozen) == 0 and result.reconstruction.shape[0] == 2


def test_fullsize_benchmark_runs_each_method_in_its_own_process(tmp_path):
    """`python -m benchmarks.fullsize` on a tiny 3-slice file: a row per (method, slice count), peak RSS."""
    import json

    from benchmarks.fullsize import main as bench_main

    pages = [Image.fromarray((head() * (150 + 30 * s)).astype(np.uint8)) for s in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    argv = ["prep", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "d"), "--size", str(N)]
    assert cli_main([*argv, "--coils", str(C), "--kspace-shape", f"{H}x{W}", "--no-progress"]) == 0
    out = tmp_path / "bench"
    data = tmp_path / "d" / "train" / "stack.h5"
    assert bench_main(["--data", str(data), "--methods", "zf", "--counts", "1,2", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["label"], r["slices"], r["rc"]) for r in rows] == [("zf", [1], 0), ("zf", [0, 1], 0)]
    assert all(r["peak_mib"] > 50 and r["shape"][-2:] == [N, N] for r in rows)
    assert "| zf |" in (out / "results.md").read_text()


def test_return_freed_memory_sets_glibc_threshold():
    """`mrdiff recon` fixes glibc's mmap threshold (peak memory bounded by one batch); False off glibc."""
    import platform

    from recon.verbs.common import return_freed_memory

    assert return_freed_memory() is (platform.libc_ver()[0] == "glibc")

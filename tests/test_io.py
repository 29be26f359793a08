"""Reading raw fastMRI / prepared files slice by slice; atomic submission-format output."""

import json

import h5py
import numpy as np
import pytest
import torch

from mrdiff.errors import InputError
from mrdiff.io import (
    center_crop,
    list_volumes,
    open_volume,
    parse_recon_size,
    read_reconstruction,
    read_slice,
    write_reconstruction,
)


def test_multicoil(multicoil_h5):
    info = open_volume(multicoil_h5)
    assert info.shape == (2, 4, 32, 32) and not info.single_coil
    assert info.target_key == "reconstruction_rss" and info.recon_size == (32, 32)
    assert info.mask is None and info.attrs["acquisition"] == "MOCK"
    s = read_slice(info, 1)
    with h5py.File(multicoil_h5) as f:
        np.testing.assert_array_equal(s.kspace.numpy(), f["kspace"][1])
        np.testing.assert_array_equal(s.target.numpy(), f["reconstruction_rss"][1])
    assert s.kspace.dtype == torch.complex64 and s.kspace.shape == (4, 32, 32)


def test_singlecoil_uses_esc_and_recon_size(singlecoil_h5):
    info = open_volume(singlecoil_h5)
    assert info.single_coil and info.shape == (2, 1, 32, 32)
    assert info.target_key == "reconstruction_esc" and info.recon_size == (24, 24)
    assert read_slice(info, 0).kspace.shape == (1, 32, 32)


def test_prepared_and_undersampled(prepared_h5, undersampled_h5):
    info = open_volume(prepared_h5)
    assert info.attrs["split"] == "val" and bool(info.attrs["simulated"])
    u = open_volume(undersampled_h5)
    assert u.mask is not None and u.mask.shape == (32, 32) and u.mask.dtype == torch.bool
    assert u.target_key is None and u.recon_size == (32, 32)


def test_fastmri_1d_mask(make_h5):
    m = np.zeros(32, np.float32)
    m[::3] = 1
    info = open_volume(make_h5("m.h5", mask_1d=m))
    assert info.mask.shape == (32,) and int(info.mask.sum()) == int((m > 0).sum())


def test_recon_size_from_header_without_target(make_h5):
    path = make_h5("h.h5", recon=(20, 16))
    with h5py.File(path, "a") as f:
        del f["reconstruction_rss"]
        header = f["ismrmrd_header"][()]
    assert parse_recon_size(header) == (20, 16)
    assert open_volume(path).recon_size == (20, 16)
    assert parse_recon_size(b"<not xml") is None


def test_center_crop_matches_fastmri():
    from fastmri.data.transforms import center_crop as fm_crop

    x = np.arange(2 * 9 * 8).reshape(2, 9, 8)
    for size in [(4, 4), (5, 3), (9, 8)]:
        np.testing.assert_array_equal(center_crop(x, size), fm_crop(x, size))


def test_write_reconstruction_atomic(tmp_path):
    out = tmp_path / "sub" / "r.h5"
    rec = np.random.default_rng(0).random((3, 8, 8)).astype(np.float64)
    attrs = {"method": "zf", "params": {"a": 1}, "nfe": 0, "seconds_per_slice": 0.5, "prior_sha256": None}
    write_reconstruction(out, rec, attrs, {"residual": np.zeros(3)})
    with h5py.File(out) as f:
        assert f["reconstruction"].dtype == np.float32 and f["reconstruction"].shape == (3, 8, 8)
        assert json.loads(f.attrs["params"]) == {"a": 1} and f.attrs["method"] == "zf"
        assert f["residual"].shape == (3,)
    np.testing.assert_allclose(read_reconstruction(out), rec.astype(np.float32))
    assert [p.name for p in out.parent.iterdir()] == ["r.h5"]


def test_write_failure_leaves_nothing(tmp_path):
    out = tmp_path / "bad.h5"
    with pytest.raises(TypeError):
        write_reconstruction(out, np.zeros((1, 4, 4)), {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_list_volumes(tmp_path, make_h5):
    b, a = make_h5("b.h5"), make_h5("a.h5")
    (tmp_path / "notes.txt").write_text("x")
    assert list_volumes(tmp_path) == [a, b]
    assert list_volumes(a) == [a]
    with pytest.raises(InputError, match="no such"):
        list_volumes(tmp_path / "missing.h5")

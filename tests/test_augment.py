"""Augmentation for contrast and anatomy shift (issue 14) and the contrast-remapped val copy."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch

from data_prep.contrast_copy import contrast_copy
from mrdiff import augmentations as aug
from mrdiff.config import DataConfig, from_dict
from mrdiff.data import augment
from mrdiff.errors import InputError
from mrdiff.noise import make_generator
from tests.test_train import write_volumes

ALL_ON = dict(tissue_prob=1.0, affine_prob=1.0, elastic_prob=1.0, noise_prob=1.0, scale_range=(0.8, 1.25))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def blocks(values=(0.25, 0.55, 0.9), size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A piecewise-constant magnitude: zero background and one block per value, plus each block's
    interior (2 px from its edges)."""
    mag = torch.zeros(size, size)
    interiors = []
    for i, v in enumerate(values):
        top = 8 + 16 * i
        mag[top : top + 12, 8 : size - 8] = v
        inner = torch.zeros(size, size, dtype=torch.bool)
        inner[top + 2 : top + 10, 10 : size - 10] = True
        interiors.append(inner)
    return mag, interiors


def test_kmeans_finds_the_levels_of_a_piecewise_constant_image():
    mag, _ = blocks()
    centres = aug.kmeans_1d(mag, 3, lo=aug.HEAD_THRESHOLD)
    assert torch.allclose(centres, torch.tensor([0.25, 0.55, 0.9]), atol=0.01)
    assert aug.kmeans_1d(torch.zeros(8, 8), 3, lo=aug.HEAD_THRESHOLD) is None


@pytest.mark.parametrize("soft", [0.0, 0.5, 1.0])
def test_tissue_remap_is_piecewise_constant_per_class(soft):
    mag, interiors = blocks()
    values = torch.tensor([0.9, 0.5, 0.2])  # inverted order (T2-like)
    out = aug.tissue_remap(mag, values, soft=soft, texture=1.0)
    assert out.shape == mag.shape and out.dtype == torch.float32
    assert (out[mag == 0] == 0).all()  # background stays dark
    for inner, v in zip(interiors, values):
        cls = out[mag == mag[inner][0]]
        assert cls.max() - cls.min() < 1e-6  # one intensity per class
        assert torch.allclose(cls, v.expand_as(cls), atol=1e-5)  # exactly the drawn value
    means = [float(out[inner].mean()) for inner in interiors]
    assert means[0] > means[1] > means[2]  # the order is inverted


def test_tissue_remap_keeps_texture_when_asked():
    mag, interiors = blocks()
    mag = mag * (1 + 0.1 * torch.linspace(-1, 1, 64))[None, :]  # a ramp within every class
    values = torch.tensor([0.3, 0.6, 0.9])
    flat = aug.tissue_remap(mag, values, texture=0.0)
    kept = aug.tissue_remap(mag, values, texture=1.0)
    assert float(flat[interiors[1]].std()) < 1e-6 < float(kept[interiors[1]].std())


def test_elastic_with_zero_strength_and_identity_affine_is_the_identity():
    g = make_generator(0)
    x = torch.randn(32, 32, dtype=torch.complex64, generator=g)
    field = aug.elastic_field((32, 32), g, strength=0.0, knots=5)
    identity = aug.affine_matrix(g, rotate_deg=0.0, shear=0.0, aspect=0.0)
    y = aug.warp(x, identity, field)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y, x, atol=1e-5)


def test_affine_has_no_zoom_and_elastic_field_stays_in_bounds():
    g = make_generator(3)
    for _ in range(20):
        m = aug.affine_matrix(g, rotate_deg=10.0, shear=0.0, aspect=0.1)
        assert abs(float(torch.linalg.det(m)) - 1) < 1e-5  # isotropic zoom is scale_range's job
    field = aug.elastic_field((64, 64), g, strength=0.02, knots=6)
    peak = float(field.abs().max()) / 2  # grid units -> fraction of the image; bicubic overshoots a little
    assert field.shape == (64, 64, 2) and 0.005 < peak <= 1.3 * 0.02


def test_warp_rotates_about_the_centre():
    x = torch.zeros(33, 33, dtype=torch.complex64)
    x[16, 16:30] = 1  # a bar to the right of the centre
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    y = aug.warp(x, quarter)
    assert torch.allclose(y, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("on", [{}, ALL_ON])
def test_augment_is_seeded_finite_and_keeps_shape(on):
    g = make_generator(1)
    x = torch.polar(torch.rand(48, 48, generator=g) + 0.2, torch.rand(48, 48, generator=g))
    cfg = DataConfig(**on)
    a, b = augment(x, cfg, make_generator(7)), augment(x, cfg, make_generator(7))
    assert torch.equal(a, b)
    assert a.shape == x.shape and a.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(a)).all()
    assert not torch.equal(a, augment(x, cfg, make_generator(8)))


def test_new_options_off_draw_nothing():
    """Old presets keep their meaning: with the issue-14 options off, augment leaves the generator
    exactly where it left it before they existed (the values the pre-change code gave, commit a916a94)."""
    g = make_generator(1)
    x = (torch.randn(48, 48, generator=g) + 1j * torch.randn(48, 48, generator=g)).to(torch.complex64)
    cfg = DataConfig(scale_range=(0.5, 1.25), rot90=False, remap_prob=1.0)
    want = {0: (794.4636840820312, -8.40692138671875), 1: (1072.4832763671875, 4.148348331451416)}
    for seed, config in ((0, DataConfig()), (1, cfg)):
        y = augment(x, config, make_generator(seed))
        assert float(y.abs().sum()) == pytest.approx(want[seed][0], rel=1e-4)
        assert float(y.real.sum()) == pytest.approx(want[seed][1], rel=1e-3, abs=1e-3)
        # off means no draw: turning an option on only with probability 0 changes nothing
        zero = dataclasses.replace(config, tissue_prob=0.0, elastic_strength=0.5, noise_range=(0.1, 0.2))
        assert torch.equal(augment(x, zero, make_generator(seed)), y)


def test_noise_level_is_modest_and_per_real_component():
    x = torch.zeros(128, 128, dtype=torch.complex64)
    y = aug.add_noise(x, make_generator(0), sigma=0.01, scale=2.0)
    assert float(y.real.std()) == pytest.approx(0.02, rel=0.05)
    assert float(y.imag.std()) == pytest.approx(0.02, rel=0.05)


def test_config_rejects_bad_ranges():
    with pytest.raises(InputError, match="tissue_classes"):
        from_dict({"data": {"tissue_classes": [1, 3]}})
    with pytest.raises(InputError, match="noise_range"):
        from_dict({"data": {"noise_range": [0.0, 0.01]}})


def test_only_the_patch_preset_turns_the_augmentation_on():
    from mrdiff.config import PRESET_DIR, resolve_config

    for path in sorted(PRESET_DIR.glob("*.yaml")):
        d = resolve_config(path.stem, []).data
        probs = (d.tissue_prob, d.affine_prob, d.elastic_prob, d.noise_prob)
        assert all(p > 0 for p in probs) if path.stem == "brain-patch-cpu" else not any(probs), path.stem


def test_contrast_copy_is_deterministic_and_reused(tmp_path):
    root = tmp_path / "data"
    write_volumes(root / "val", n_files=1, slices=3, size=32)
    first = contrast_copy(root, "val", seed=0)
    out = root / "val-contrast" / "vol0.h5"
    assert first.written == [out]
    with h5py.File(out, "r") as f:
        image, rss = f["image"][()], f["reconstruction_rss"][()]
        contrasts = f.attrs["contrast"]
    with h5py.File(root / "val" / "vol0.h5", "r") as f:
        source = f["image"][()]
    assert image.shape == source.shape and image.dtype == np.complex64
    assert np.allclose(
        np.angle(image[np.abs(source) > 0.1]), np.angle(source[np.abs(source) > 0.1]), atol=1e-4
    )
    assert np.allclose(rss, np.abs(image)) and np.isfinite(image).all()
    assert not np.allclose(np.abs(image), np.abs(source), atol=0.05)
    assert contrast_copy(root, "val", seed=0).reused == [out]  # same key: not rewritten
    again = tmp_path / "again"
    write_volumes(again / "val", n_files=1, slices=3, size=32)
    contrast_copy(again, "val", seed=0)
    with h5py.File(again / "val-contrast" / "vol0.h5", "r") as f:
        assert np.array_equal(f["image"][()], image) and f.attrs["contrast"] == contrasts
    contrast_copy(again, "val", seed=1, force=True)
    with h5py.File(again / "val-contrast" / "vol0.h5", "r") as f:
        assert not np.array_equal(f["image"][()], image)
    with pytest.raises(InputError, match="no .h5 volumes"):
        contrast_copy(root, "missing")
    with pytest.raises(InputError, match="split name"):
        contrast_copy(root, "../val")


def test_prep_verb_contrast_copy(tmp_path, capsys):
    from recon.cli import main

    write_volumes(tmp_path / "val", n_files=2, slices=2, size=32)
    assert main(["prep", "--out", str(tmp_path), "--contrast-copy", "val"]) == 0
    assert "2 volumes written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "val-contrast").glob("*.h5")) == ["vol0.h5", "vol1.h5"]


def test_augment_cost_benchmark_runs(tmp_path, capsys):
    from benchmarks.augment_cost import main

    write_volumes(tmp_path, n_files=1, slices=2, size=32)
    assert main(["--data", str(tmp_path), "--images", "2", "--rounds", "1"]) == 0
    assert capsys.readouterr().out.count("ms/image") == 6

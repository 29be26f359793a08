"""mrdiff prep: a leaking volume is never written; train/val from one multi-frame source by hold-out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from data_prep.holdout import Holdout, parse_holdout
from mrdiff.errors import InputError
from recon.verbs import prep as prep_verb

FRAMES = 8


def cine(path, frames: int = FRAMES):
    """A multi-page TIFF standing in for a cine (one slice stack, ``frames`` frames)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:16j, -1:1:16j]
    inside = xx**2 + yy**2 < 0.6
    pages = [
        Image.fromarray((inside * (100 + 20 * f + 50 * rng.random((16, 16)))).astype(np.uint8))
        for f in range(frames)
    ]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def prep(src, out, *extra: str) -> int:
    """Run ``mrdiff prep`` on tiny settings."""
    argv = [str(src), "--out", str(out), "--size", "16", "--coils", "2", "--min-foreground", "0"]
    return prep_verb.main([*argv, "--no-progress", *extra])


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def slices_by_split(out) -> dict[str, list[int]]:
    return {e["split"]: e["source_slices"] for e in manifest(out)["volumes"]}


def test_leaking_split_is_not_written(tmp_path, capsys):
    src, out = cine(tmp_path / "cine.tif"), tmp_path / "out"
    assert prep(src, out, "--split", "train") == 0
    assert prep(src, out, "--split", "val") == 1  # same frames in another split
    err = capsys.readouterr().err
    assert "leakage" in err and "val/cine.h5: not written" in err
    assert not (out / "val").exists() or not list((out / "val").iterdir())
    assert set(slices_by_split(out)) == {"train"}  # the manifest lists only what is on disk
    assert not list(out.rglob("*.partial"))


def test_holdout_slices_split_one_source_into_train_and_val(tmp_path, capsys):
    src, out = cine(tmp_path / "cine.tif"), tmp_path / "out"
    assert prep(src, out, "--split", "train") == 0  # all frames to train first ...
    assert prep(src, out, "--holdout-slices", "6:8") == 0  # ... then hold two out: train is rebuilt
    assert slices_by_split(out) == {"train": list(range(6)), "val": [6, 7]}
    assert (out / "train" / "cine.h5").exists() and (out / "val" / "cine.h5").exists()
    assert manifest(out)["holdout_subjects"] == {"cine.tif": ["train", "val"]}
    # the per-slice check still applies: every frame into val again would repeat train's frames
    assert prep(src, tmp_path / "out", "--split", "val", "--force") == 1
    assert "leakage: cine.tif slice 0 in splits 'train' and 'val'" in capsys.readouterr().err
    assert slices_by_split(out) == {"train": list(range(6)), "val": [6, 7]}


def test_val_fraction_holds_out_the_last_block(tmp_path):
    src, out = cine(tmp_path / "cine.tif"), tmp_path / "out"
    assert prep(src, out, "--val-fraction", "0.25", "--holdout-split", "test") == 0
    assert slices_by_split(out) == {"train": list(range(6)), "test": [6, 7]}


def test_holdout_refuses_sources_with_several_orientations(tmp_path, capsys):
    vol = (np.random.default_rng(0).random((8, 8, 8)) * 200).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "head.nii.gz")
    assert prep(tmp_path / "head.nii.gz", tmp_path / "out", "--holdout-slices", "4:8") == 1
    assert "single slice stack" in capsys.readouterr().err
    assert (
        prep(tmp_path / "head.nii.gz", tmp_path / "ok", "--holdout-slices", "4:8", "--orientations", "axial")
        == 0
    )
    assert slices_by_split(tmp_path / "ok") == {"train": [0, 1, 2, 3], "val": [4, 5, 6, 7]}


@pytest.mark.parametrize(
    "extra",
    [
        ["--holdout-slices", "5"],
        ["--holdout-slices", "6:2"],
        ["--holdout-slices", "a:b"],
        ["--val-fraction", "1.5"],
        ["--val-fraction", "0.2", "--holdout-slices", "1:2"],
        ["--holdout-slices", "1:2", "--holdout-split", "train"],
    ],
)
def test_bad_holdout_options_are_input_errors_and_write_nothing(tmp_path, extra):
    with pytest.raises(InputError):
        prep(cine(tmp_path / "cine.tif"), tmp_path / "out", *extra)
    assert not (tmp_path / "out").exists()


def test_holdout_must_leave_slices_on_both_sides():
    indices = list(range(4))
    assert Holdout(start=1, stop=3).partition(indices, "s") == ([0, 3], [1, 2])
    assert Holdout(fraction=0.01).partition(indices, "s") == ([0, 1, 2], [3])  # at least one held out
    assert Holdout(fraction=0.99).partition(indices, "s") == ([0], [1, 2, 3])  # never all
    with pytest.raises(InputError, match="both sides"):
        Holdout(start=4, stop=9).partition(indices, "s")
    with pytest.raises(InputError, match="both sides"):
        Holdout(fraction=0.5).partition([0], "s")
    assert parse_holdout(None, None, "val") is None


def test_open_brain_and_demo_need_an_explicit_data_folder(tmp_path):
    for flag in ("--open-brain", "--demo"):
        with pytest.raises(SystemExit) as exit_info:
            prep_verb.main([flag, "--out", str(tmp_path)])
        assert exit_info.value.code == 2

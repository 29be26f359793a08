"""`mrdiff recon | eval | info` end to end on tiny mock files (CPU, seconds)."""

import json

import h5py
import numpy as np
import pytest

from recon.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_recon_zf_then_eval(capsys, tmp_path, multicoil_h5):
    out = tmp_path / "out" / "r.h5"
    code, stdout, err = run(capsys, "recon", multicoil_h5, "--method", "zf", "--out", out, "--device", "cpu")
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["written"] == [str(out)]
    with h5py.File(out) as f, h5py.File(multicoil_h5) as g:
        rec = f["reconstruction"][()]
        assert rec.dtype == np.float32 and rec.shape == g["reconstruction_rss"].shape
        assert f.attrs["method"] == "zf" and f.attrs["device"] == "cpu"
        assert float(f.attrs["seconds_per_slice"]) >= 0 and int(f.attrs["nfe"]) == 0
        assert json.loads(f.attrs["params"]) == {} and "accel" in json.loads(f.attrs["config"])
        assert f["residual"].shape == (2,)
    code, stdout, err = run(capsys, "eval", "--target", multicoil_h5, "--pred", out, "--json")
    assert code == 0, err
    metrics = json.loads(stdout)
    assert set(metrics) >= {"NMSE", "PSNR", "SSIM", "volumes"} and 0 < metrics["SSIM"] <= 1
    code, stdout, _ = run(capsys, "eval", "--target", multicoil_h5, "--pred", out)
    assert code == 0 and "SSIM" in stdout


def test_recon_sense_beats_zf_on_mock(capsys, tmp_path, multicoil_h5):
    ssim = {}
    for method in ("zf", "sense"):
        out = tmp_path / f"{method}.h5"
        argv = [
            "recon",
            multicoil_h5,
            "--method",
            method,
            "--out",
            out,
            "--accel",
            "2",
            "--center-fraction",
            "0.25",
        ]
        assert run(capsys, *argv)[0] == 0
        code, stdout, err = run(capsys, "eval", "--target", multicoil_h5, "--pred", out, "--json")
        assert code == 0, err
        ssim[method] = json.loads(stdout)["SSIM"]
    assert ssim["sense"] > ssim["zf"]


def test_same_mask_for_every_method(capsys, tmp_path, multicoil_h5):
    masks = []
    for method in ("zf", "sense"):
        out = tmp_path / f"{method}.h5"
        code, _, err = run(capsys, "recon", multicoil_h5, "--method", method, "--out", out)
        assert code == 0, err
        with h5py.File(out) as f:
            masks.append(f["mask"][()])
    np.testing.assert_array_equal(masks[0], masks[1])


def test_directory_resume_and_png(capsys, tmp_path, make_h5):
    src = tmp_path / "in"
    src.mkdir()
    a = make_h5("in/a.h5")
    make_h5("in/b.h5", layout="singlecoil", recon=(24, 24))
    out = tmp_path / "res"
    code, _, err = run(capsys, "recon", src, "--method", "zf", "--out", out, "--png")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.h5")) == ["a.h5", "b.h5"]
    assert len(list(out.rglob("*.png"))) == 4
    with h5py.File(out / "b.h5") as f:
        assert f["reconstruction"].shape == (2, 24, 24)  # single-coil ESC crop
    mtime = (out / "a.h5").stat().st_mtime_ns
    code, stdout, _ = run(capsys, "recon", src, "--method", "zf", "--out", out, "--resume")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 2
    assert (out / "a.h5").stat().st_mtime_ns == mtime
    code, stdout, _ = run(capsys, "eval", "--target", src, "--pred", out, "--json")
    assert code == 0 and len(json.loads(stdout)["volumes"]) == 2
    assert a.exists()


def test_acquired_mask_is_used(capsys, tmp_path, undersampled_h5):
    out = tmp_path / "u.h5"
    code, _, err = run(capsys, "recon", undersampled_h5, "--method", "sense", "--out", out, "--accel", "8")
    assert code == 0, err
    with h5py.File(out) as f, h5py.File(undersampled_h5) as g:
        np.testing.assert_array_equal(f["mask"][()], g["mask"][()])
        assert f.attrs["mask"] == "file" and f["reconstruction"].shape == (2, 32, 32)


def test_cs_with_set_params(capsys, tmp_path, prepared_h5):
    out = tmp_path / "cs.h5"
    argv = [
        "recon",
        prepared_h5,
        "--method",
        "cs-l1",
        "--out",
        out,
        "--set",
        "lamda=0.01",
        "--set",
        "cs-l1.iters=5",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    with h5py.File(out) as f:
        assert json.loads(f.attrs["params"]) == {"lamda": 0.01, "iters": 5}


def test_info(capsys, multicoil_h5, singlecoil_h5, undersampled_h5):
    code, stdout, _ = run(capsys, "info", multicoil_h5, singlecoil_h5, undersampled_h5, "--json")
    assert code == 0
    rows = json.loads(stdout)
    assert [r["coils"] for r in rows] == [4, 1, 4]
    assert rows[1]["recon_size"] == [24, 24] and rows[1]["target"] == "reconstruction_esc"
    assert rows[2]["sampling_fraction"] == pytest.approx(0.625)
    code, stdout, _ = run(capsys, "info", multicoil_h5)
    assert code == 0 and "4 coils" in stdout and "acquisition=MOCK" in stdout
    code, stdout, _ = run(capsys, "info", "--methods")
    assert code == 0 and {"zf", "sense", "cs-l1", "cs-tv"} <= set(stdout.split())


def test_slice_subset_recon_and_eval(capsys, tmp_path, make_h5):
    src = make_h5("three.h5", slices=3)
    out = tmp_path / "sub.h5"
    code, _, err = run(capsys, "recon", src, "--method", "zf", "--out", out, "--slices", "2,0")
    assert code == 0, err
    with h5py.File(out) as f, h5py.File(src) as g:
        assert f["reconstruction"].shape == (2, 32, 32)
        full = g["reconstruction_rss"][()][[2, 0]]
    code, stdout, err = run(capsys, "eval", "--target", src, "--pred", out, "--json")
    assert code == 0, err
    from mrdiff.metrics import volume_metrics

    with h5py.File(out) as f:
        ref = volume_metrics(full, f["reconstruction"][()])
    assert json.loads(stdout)["SSIM"] == pytest.approx(ref["SSIM"], abs=1e-9)

"""Metrics equal fastmri.evaluate (functions, cropping, mean and 2*std over volumes)."""

import argparse

import h5py
import numpy as np
import pytest
from fastmri import evaluate

from mrdiff.metrics import METRIC_NAMES, aggregate, volume_metrics


def _volumes(n=3, shape=(4, 20, 16), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = rng.random(shape).astype(np.float32) * rng.uniform(0.5, 3)
        p = (t + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        out.append((t, p))
    return out


def test_volume_metrics_equal_fastmri_functions():
    for t, p in _volumes():
        m = volume_metrics(t, p)
        tc = t[:, 2:18, :]  # fastMRI crops both to (W, W)
        pc = p[:, 2:18, :]
        assert m["NMSE"] == pytest.approx(float(evaluate.nmse(tc, pc)), abs=1e-6)
        assert m["PSNR"] == pytest.approx(float(evaluate.psnr(tc, pc)), abs=1e-6)
        assert m["SSIM"] == pytest.approx(float(evaluate.ssim(tc, pc)[0]), abs=1e-6)


def test_aggregate_equals_fastmri_metrics_class():
    vols = _volumes(4)
    ref = evaluate.Metrics(evaluate.METRIC_FUNCS)
    rows = []
    for t, p in vols:
        tc, pc = t[:, 2:18, :], p[:, 2:18, :]
        ref.push(tc, pc)
        rows.append(volume_metrics(t, p))
    agg = aggregate(rows)
    for name in METRIC_NAMES:
        assert agg[name]["mean"] == pytest.approx(np.asarray(ref.means()[name]).item(), abs=1e-6)
        assert agg[name]["2std"] == pytest.approx(2 * np.asarray(ref.stddevs()[name]).item(), abs=1e-6)


def test_cli_eval_equals_fastmri_evaluate(tmp_path):
    from recon.cli import main

    tdir, pdir = tmp_path / "t", tmp_path / "p"
    tdir.mkdir()
    pdir.mkdir()
    for i, (t, p) in enumerate(_volumes(3, shape=(3, 24, 20), seed=1)):
        with h5py.File(tdir / f"v{i}.h5", "w") as f:
            f["reconstruction_rss"] = t
        with h5py.File(pdir / f"v{i}.h5", "w") as f:
            f["reconstruction"] = p
    args = argparse.Namespace(target_path=tdir, predictions_path=pdir, acquisition=None, acceleration=None)
    ref = evaluate.evaluate(args, "reconstruction_rss")
    import contextlib
    import io
    import json

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", "--target", str(tdir), "--pred", str(pdir), "--json"]) == 0
    got = json.loads(buf.getvalue())
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(np.asarray(ref.means()[name]).item(), abs=1e-6)
    assert len(got["volumes"]) == 3


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_perfect_reconstruction():
    t = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32) + 0.1
    m = volume_metrics(t, t.copy())
    assert m["NMSE"] == 0 and m["SSIM"] == pytest.approx(1.0) and np.isinf(m["PSNR"])


def test_target_wider_than_tall_is_scored_whole(tmp_path, make_h5, capsys):
    """A 127 x 131 target cannot be cropped to fastMRI's (W, W): it is scored on (H, W), also by
    `mrdiff recon` + `mrdiff eval` end to end (this was `ValueError: Invalid shapes`)."""
    from recon.cli import main

    t, p = _volumes(1, shape=(2, 127, 131))[0]
    m = volume_metrics(t, p)
    assert m["NMSE"] == pytest.approx(float(evaluate.nmse(t, p)), abs=1e-6)
    assert m["SSIM"] == pytest.approx(float(evaluate.ssim(t, p)[0]), abs=1e-6)
    src = make_h5("wide.h5", layout="singlecoil", H=27, W=31)
    out = tmp_path / "wide_out.h5"
    assert main(["recon", str(src), "--method", "zf", "--out", str(out), "--no-heldout"]) == 0
    assert main(["eval", "--target", str(src), "--pred", str(out), "--json"]) == 0, capsys.readouterr().err

"""Reliability as a new user meets it: bad destinations fail before compute, one bad file does not
stop a folder, --resume checks what it skips, the prior must fit the input, SIGTERM is a clean stop."""

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import mrdiff.pipeline as pipeline
from mrdiff.errors import InputError
from recon.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_compute(monkeypatch):
    """Make any reconstruction fail loudly: the checks under test must come before compute."""

    def boom(*a, **k):
        raise AssertionError("computed before the destination was checked")

    monkeypatch.setattr("recon.verbs.recon.reconstruct_volume", boom)


@pytest.mark.parametrize("case", ["file-as-folder", "unmakeable-parent", "out-is-a-directory"])
def test_bad_destination_fails_before_compute(case, multicoil_h5, tmp_path, capsys, monkeypatch):
    if case == "unmakeable-parent" and not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc (a directory nothing can be created in)")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.h5").mkdir()
    out = {
        "file-as-folder": tmp_path / "afile" / "r.h5",
        "unmakeable-parent": Path("/proc/mrdiff-test/sub/r.h5"),
        "out-is-a-directory": tmp_path / "adir.h5",
    }[case]
    _no_compute(monkeypatch)
    code, _, err = _run(capsys, "recon", multicoil_h5, "--method", "zf", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "--out" in err


def test_read_only_directory_fails_before_compute(multicoil_h5, tmp_path, capsys, monkeypatch):
    """Root can write anywhere, so the unwritable directory is simulated where the probe creates a file."""
    import recon.verbs.common as common

    def read_only(dir=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(common.tempfile, "TemporaryFile", read_only)
    _no_compute(monkeypatch)
    code, _, err = _run(capsys, "recon", multicoil_h5, "--method", "zf", "--out", tmp_path / "ro" / "r.h5")
    assert code == 2 and "cannot write" in err and "Permission denied" in err


def _folder(make_h5, tmp_path):
    """good a.h5, corrupt b.h5 (not HDF5), c.h5 with a NaN slice, good d.h5."""
    src = tmp_path / "in"
    src.mkdir()
    make_h5("in/a.h5")
    (src / "b.h5").write_text("not HDF5")
    c = make_h5("in/c.h5")
    with h5py.File(c, "a") as f:
        k = f["kspace"][()]
        k[1] = np.nan
        del f["kspace"]
        f["kspace"] = k
    make_h5("in/d.h5")
    return src


def test_keep_going_is_the_default_for_a_folder(make_h5, tmp_path, capsys):
    src, out = _folder(make_h5, tmp_path), tmp_path / "out"
    code, stdout, err = _run(capsys, "recon", src, "--method", "zf", "--out", out, "--no-heldout")
    assert code == 1
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(Path(p).name for p in summary["written"]) == ["a.h5", "d.h5"]
    assert sorted(Path(p).name for p in summary["failed"]) == ["b.h5", "c.h5"]
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "d.h5"]  # no partial files either
    assert "b.h5" in err and "c.h5" in err and "slice 1" in err and "Traceback" not in err


def test_no_keep_going_stops_at_the_first_bad_file(make_h5, tmp_path, capsys):
    src, out = _folder(make_h5, tmp_path), tmp_path / "out"
    code, _, err = _run(capsys, "recon", src, "--method", "zf", "--out", out, "--no-keep-going")
    assert code == 2 and "b.h5" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # inputs are validated before anything is written


def test_resume_redoes_empty_foreign_and_other_request_outputs(make_h5, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in "abcd":
        make_h5(f"in/{name}.h5")
    out = tmp_path / "out"
    argv = ["recon", src, "--method", "zf", "--out", out, "--no-heldout"]
    assert _run(capsys, *argv)[0] == 0
    (out / "a.h5").write_bytes(b"")  # zero bytes (killed before h5 wrote anything)
    (out / "b.h5").write_bytes((out / "b.h5").read_bytes()[:500])  # truncated
    other = tmp_path / "other.h5"
    assert _run(capsys, "recon", src / "c.h5", "--method", "sense", "--out", other, "--no-heldout")[0] == 0
    (out / "c.h5").write_bytes(other.read_bytes())  # written by another method
    mtime = (out / "d.h5").stat().st_mtime_ns
    code, stdout, err = _run(capsys, *argv, "--resume")
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert sorted(Path(p).name for p in summary["written"]) == ["a.h5", "b.h5", "c.h5"]
    assert summary["skipped"] == 1 and (out / "d.h5").stat().st_mtime_ns == mtime
    assert "method differ" in err
    with h5py.File(out / "c.h5") as f:
        assert f.attrs["method"] == "zf"
    code, stdout, _ = _run(capsys, *argv, "--resume", "--accel", "2")  # another mask: all redone
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 0


def _info(H, W):
    return SimpleNamespace(path=Path("x.h5"), shape=(1, 1, H, W))


def _prior(resolution, family="image"):
    return SimpleNamespace(config={"model": {"family": family}, "data": {"resolution": resolution}})


def test_prior_must_fit_the_input():
    with pytest.raises(InputError, match="trained at 32x32"):
        pipeline.check_prior_fits(_prior(32), _info(128, 128))
    with pytest.raises(InputError, match="patch prior"):
        pipeline.check_prior_fits(_prior(256), _info(96, 128))
    with pytest.warns(UserWarning, match="trained at 128x128"):
        pipeline.check_prior_fits(_prior(128), _info(256, 256))
    pipeline.check_prior_fits(_prior(128), _info(128, 128))
    pipeline.check_prior_fits(_prior(32, "patch"), _info(320, 640))  # a patch prior fits any size


def test_recon_refuses_a_prior_far_from_the_input_size(multicoil_h5, tmp_path, capsys, monkeypatch):
    import mrdiff.priors

    monkeypatch.setattr(mrdiff.priors, "load_prior", lambda path=None, device="cpu": _prior(8))
    _no_compute(monkeypatch)
    code, _, err = _run(capsys, "recon", multicoil_h5, "--method", "pocs", "--out", tmp_path / "p.h5")
    assert code == 2 and "trained at 8x8" in err and len(err.strip().splitlines()) == 1


def test_sigterm_stops_recon_cleanly(make_h5, tmp_path, capsys, monkeypatch):
    """SIGTERM mid-folder: the file being written is discarded (no .partial left), finished files stay,
    exit 130 as for Ctrl-C; the handler is removed afterwards."""
    import recon.verbs.recon as recon_verb

    src = tmp_path / "in"
    src.mkdir()
    make_h5("in/a.h5")
    make_h5("in/b.h5")
    real = recon_verb.write_reconstruction
    calls = []

    def write_then_term(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, *a, **k)

    monkeypatch.setattr(recon_verb, "write_reconstruction", write_then_term)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = _run(capsys, "recon", src, "--method", "zf", "--out", tmp_path / "out", "--no-heldout")
    assert code == 130 and "interrupted" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.h5"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_accel_inf_is_refused(multicoil_h5, tmp_path, capsys):
    code, _, err = _run(
        capsys, "recon", multicoil_h5, "--method", "zf", "--out", tmp_path / "o.h5", "--accel", "inf"
    )
    assert code == 2 and "accel" in err

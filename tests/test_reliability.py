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


def test_a_damaged_slice_is_a_clear_error(make_h5, tmp_path, capsys):
    """Bytes damaged inside a compressed chunk: the file opens, reading that slice fails (one line)."""
    path = make_h5("ok.h5", slices=3)
    with h5py.File(path, "a") as f:
        k = f["kspace"][()]
        del f["kspace"]
        f.create_dataset("kspace", data=k, chunks=(1, *k.shape[1:]), compression="gzip")
    data = bytearray(path.read_bytes())
    with h5py.File(path) as f:
        offset = f["kspace"].id.get_chunk_info(2).byte_offset  # the last slice's chunk
    data[offset + 20 : offset + 400] = b"\x55" * 380
    path.write_bytes(bytes(data))
    code, _, err = _run(capsys, "recon", path, "--method", "zf", "--out", tmp_path / "o.h5", "--no-heldout")
    assert code == 2 and "cannot read slice 2" in err and len(err.strip().splitlines()) == 1, err


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
    assert _run(capsys, *argv, "--accel", "2", "--slices", "0")[0] == 0
    code, stdout, err = _run(capsys, *argv, "--resume", "--accel", "2", "--slices", "1")  # same count
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 0 and "slices" in err
    code, stdout, _ = _run(capsys, *argv, "--resume", "--accel", "2", "--slices", "1")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 4


def test_resume_redoes_an_output_scored_on_another_heldout_split(make_h5, tmp_path, capsys):
    """The recorded held-out error is part of the request: ``--heldout-folds 3`` (or ``--no-heldout``)
    does not skip an output whose error was scored on one fold; the same request is skipped."""
    src = make_h5("a.h5", layout="multicoil")
    out = tmp_path / "r.h5"
    argv = ["recon", src, "--method", "zf", "--out", out, "--accel", "2", "--center-fraction", "0.125"]
    assert _run(capsys, *argv)[0] == 0
    code, stdout, err = _run(capsys, *argv, "--resume", "--heldout-folds", "3", "--holdout-fraction", "0.2")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 0 and "heldout" in err
    with h5py.File(out) as f:
        assert json.loads(f.attrs["heldout"])["folds"] == 3
    code, stdout, _ = _run(capsys, *argv, "--resume", "--heldout-folds", "3", "--holdout-fraction", "0.2")
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 1
    code, stdout, _ = _run(capsys, *argv, "--resume", "--no-heldout")
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


def test_orphan_partials_are_removed_live_ones_kept(tmp_path):
    """A killed writer's ``.NAME.PID.partial`` goes at the next write of NAME; a live writer's stays."""
    import subprocess
    import sys

    from mrdiff.atomic import atomic_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f".r.h5.{dead_pid}.partial"
    live = tmp_path / f".r.h5.{os.getppid()}.partial"
    other = tmp_path / f".other.h5.{dead_pid}.partial"
    for p in (orphan, live, other):
        p.write_bytes(b"half")
    with atomic_path(tmp_path / "r.h5") as tmp:
        tmp.write_bytes(b"done")
    assert not orphan.exists() and live.exists() and other.exists()
    assert (tmp_path / "r.h5").read_bytes() == b"done"


def test_version(capsys):
    from mrdiff import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"mrdiff {__version__}"


def test_numba_gets_a_writable_cache_without_a_writable_home(tmp_path):
    from recon.cli import numba_cache_fallback

    env = {"HOME": "/proc/no-such-home"}
    numba_cache_fallback(env)
    assert env["NUMBA_CACHE_DIR"].startswith(str(Path(__import__("tempfile").gettempdir())))
    env = {"HOME": str(tmp_path)}
    numba_cache_fallback(env)
    assert "NUMBA_CACHE_DIR" not in env
    env = {"HOME": "/proc/x", "NUMBA_CACHE_DIR": "/mine"}
    numba_cache_fallback(env)
    assert env["NUMBA_CACHE_DIR"] == "/mine"


@pytest.mark.parametrize("values, ok", [([0.3, 0.6], False), ([0.0, 1.0], True)])
def test_float_masks_must_be_zero_or_one(values, ok, make_h5, tmp_path, capsys):
    mask = np.tile(np.asarray(values, np.float32), 16)  # width 32
    mask[12:20] = 1.0  # a fully sampled centre for the coil maps
    path = make_h5("fm.h5", mask_1d=mask)
    code, _, err = _run(capsys, "recon", path, "--method", "zf", "--out", tmp_path / "o.h5", "--no-heldout")
    assert (code == 0) if ok else (code == 2 and "only 0 and 1" in err), err


def _train_args(tmp_path, *extra):
    from test_train import TINY, write_volumes

    write_volumes(tmp_path / "data" / "train")
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))
    return ["train", "--config", tmp_path / "tiny.yaml", "--data", tmp_path / "data", *extra]


@pytest.mark.parametrize("bad", ["train.lr=-1", "train.ema_decay=1.5", "train.max_steps=0"])
def test_bad_training_numbers_are_one_line_errors(bad, tmp_path, capsys):
    code, _, err = _run(capsys, *_train_args(tmp_path, "--out", tmp_path / "run", "--set", bad))
    assert code == 2 and bad.split("=")[0] in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_failed_start_leaves_no_run_folder(tmp_path, capsys):
    """--init with a prior that does not fit the config fails inside training: no run folder stays."""
    from test_train import TINY

    from mrdiff.config import from_dict, to_dict
    from mrdiff.priors import build_denoiser
    from mrdiff.priors.checkpoint import export_prior

    other = to_dict(from_dict({**TINY, "model": {**TINY["model"], "channels": [8, 24]}}))
    export_prior(
        {"config": other, "step": 1, "ema": build_denoiser(other).model.state_dict()}, tmp_path / "p.pt"
    )
    code, _, err = _run(
        capsys, *_train_args(tmp_path, "--out", tmp_path / "run", "--init", tmp_path / "p.pt")
    )
    assert code == 2 and "does not match" in err
    assert not (tmp_path / "run").exists()


def test_log_has_each_step_once_after_a_resume(tmp_path, capsys):
    """A killed run logged steps after its last checkpoint; the resumed run logs them again: the log
    keeps one line per step (and drops a line the kill cut short)."""
    args = _train_args(tmp_path, "--out", tmp_path / "run")
    assert _run(capsys, *args, "--set", "train.max_steps=3")[0] == 0  # checkpoint at step 3
    log = tmp_path / "run" / "log.jsonl"
    with open(log, "a") as f:  # what a run killed at step 5 had logged after its checkpoint
        f.write(json.dumps({"event": "step", "step": 4, "loss": 9.0}) + "\n")
        f.write('{"event": "step", "st')
    assert _run(capsys, *args, "--set", "train.max_steps=6", "--resume")[0] == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == [2, 4, 6] and all(e.get("loss") != 9.0 for e in events)


def test_sample_checks_its_destination_before_sampling(tmp_path, capsys, monkeypatch):
    import mrdiff.priors

    def no_prior(*a, **k):
        raise AssertionError("loaded the prior before the destination was checked")

    monkeypatch.setattr(mrdiff.priors, "load_prior", no_prior)
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, "sample", "--out", tmp_path / "afile" / "g.png", "-n", "1")
    assert code == 2 and "is a file, not a directory" in err and "Traceback" not in err

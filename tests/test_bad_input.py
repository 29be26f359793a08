"""Bad input: one clear line on stderr naming the file and the problem, exit 2, no output, input intact."""

import hashlib

import h5py
import numpy as np
import pytest

from recon.cli import main


def _fingerprint(path):
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _replace(name, data):
    def fn(f):
        del f[name]
        f.create_dataset(name, data=data)

    return fn


def _bad_files(make_h5, tmp_path):
    """name -> (path, expected words in the message)."""
    good = make_h5("good.h5")
    k = h5py.File(good)["kspace"][()]
    trunc = tmp_path / "truncated.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    text = tmp_path / "notes.h5"
    text.write_text("this is not HDF5\n")
    nan_k, inf_k = k.copy(), k.copy()
    nan_k[1, 0, 3, 3] = np.nan
    inf_k[0, 2, 1, 1] = np.inf
    return {
        "truncated": (trunc, "HDF5"),
        "not-hdf5": (text, "HDF5"),
        "no-kspace": (_edit(make_h5("nok.h5"), lambda f: f.__delitem__("kspace")), "kspace"),
        "rank-2": (_edit(make_h5("r2.h5"), _replace("kspace", k[0, 0])), "kspace"),
        "rank-5": (_edit(make_h5("r5.h5"), _replace("kspace", k[None])), "kspace"),
        "real-kspace": (_edit(make_h5("real.h5"), _replace("kspace", k.real)), "complex"),
        "nan": (_edit(make_h5("nan.h5"), _replace("kspace", nan_k)), "NaN"),
        "inf": (_edit(make_h5("inf.h5"), _replace("kspace", inf_k)), "Inf"),
        "zeros": (_edit(make_h5("zero.h5"), _replace("kspace", np.zeros_like(k))), "zero"),
        "mask-width": (make_h5("mw.h5", mask_1d=np.ones(31, bool)), "mask"),
    }


CASES = [
    "truncated",
    "not-hdf5",
    "no-kspace",
    "rank-2",
    "rank-5",
    "real-kspace",
    "nan",
    "inf",
    "zeros",
    "mask-width",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("verb", ["recon", "info"])
def test_bad_file(case, verb, make_h5, tmp_path, capsys):
    path, words = _bad_files(make_h5, tmp_path)[case]
    before = _fingerprint(path)
    out = tmp_path / "out"
    argv = (
        ["recon", str(path), "--method", "zf", "--out", str(out)] if verb == "recon" else ["info", str(path)]
    )
    code = main(argv)
    err = capsys.readouterr().err
    if verb == "info" and case in ("nan", "inf", "zeros"):
        assert code == 0  # info reads no k-space values
        return
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    assert _fingerprint(path) == before


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--method", "nope"], "unknown method"),
        (["--method", "zf", "--mask", "spiral"], "unknown mask"),
        (["--method", "zf", "--accel", "0.5"], "accel"),
        (["--method", "sense", "--center-fraction", "0.0"], "coil maps"),
        (["--method", "cs-l1", "--set", "nonsense=1"], "unknown parameter"),
        (["--method", "zf", "--set", "novalue"], "key=value"),
    ],
)
def test_bad_options(extra, words, multicoil_h5, tmp_path, capsys):
    before = _fingerprint(multicoil_h5)
    out = tmp_path / "o.h5"
    code = main(["recon", str(multicoil_h5), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.glob(".*partial")) == []
    assert _fingerprint(multicoil_h5) == before


def test_missing_input_and_eval_errors(tmp_path, multicoil_h5, capsys):
    assert main(["recon", str(tmp_path / "missing.h5"), "--method", "zf", "--out", str(tmp_path / "o")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    assert main(["eval", "--target", str(multicoil_h5), "--pred", str(tmp_path / "none.h5")]) == 2
    assert "none.h5" in capsys.readouterr().err
    assert main(["eval", "--target", str(tmp_path), "--pred", str(tmp_path)]) == 2
    capsys.readouterr()


def test_failure_midway_leaves_no_partial_file(make_h5, tmp_path, capsys):
    """Slice 0 is fine and slice 1 is NaN: the error comes after work started, still no output."""
    k = h5py.File(make_h5("ok.h5"))["kspace"][()]
    k[1] = np.nan
    path = _edit(make_h5("late.h5"), _replace("kspace", k))
    out = tmp_path / "late_out.h5"
    assert main(["recon", str(path), "--method", "zf", "--out", str(out)]) == 2
    assert "slice 1" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".*partial")) == []


@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "directory"])
def test_recon_never_overwrites_its_input(as_dir, multicoil_h5, tmp_path, capsys):
    """`mrdiff recon F --out F` (or a directory onto itself) must refuse, exit 2, and leave F unchanged."""
    before = _fingerprint(multicoil_h5)
    target = multicoil_h5.parent if as_dir else multicoil_h5
    code = main(
        ["recon", str(target), "--method", "zf", "--accel", "4", "--out", str(target), "--no-heldout"]
    )
    assert code == 2 and "input" in capsys.readouterr().err
    assert _fingerprint(multicoil_h5) == before


def test_write_reconstruction_refuses_to_replace_kspace(multicoil_h5):
    from mrdiff.errors import InputError
    from mrdiff.io import write_reconstruction

    before = _fingerprint(multicoil_h5)
    with pytest.raises(InputError, match="k-space"):
        write_reconstruction(multicoil_h5, np.zeros((1, 4, 4), np.float32), {})
    assert _fingerprint(multicoil_h5) == before

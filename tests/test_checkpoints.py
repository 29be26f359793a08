"""The one checkpoint layer (mrdiff.checkpoints): atomic saves, safe loads, one sha256 helper."""

import hashlib

import h5py
import numpy as np
import pytest
import torch

import mrdiff.supervised as supervised
from mrdiff import checkpoints
from mrdiff.errors import InputError
from mrdiff.priors import checkpoint as prior_ckpt


def _prior_save(path, value):
    prior_ckpt.save_checkpoint({"config": {}, "step": value, "w": torch.full((64,), float(value))}, path)


def _supervised_save(path, value):
    model = torch.nn.Linear(4, 4)
    supervised.save_checkpoint(path, "unet", model, {"chans": value})


@pytest.mark.parametrize("save", [_prior_save, _supervised_save])
def test_interrupted_save_leaves_the_previous_file(tmp_path, monkeypatch, save):
    """A save that dies half-way (here: torch.save writes some bytes, then raises) must leave the
    previous checkpoint byte-identical and no temporary file behind."""
    path = tmp_path / "ck.pt"
    save(path, 1)
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:
            fh.truncate(10)
        raise KeyboardInterrupt  # the job is killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save(path, 2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_one_sha256_helper(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert checkpoints.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prior_ckpt.sha256_file is checkpoints.sha256_file
    assert not hasattr(supervised, "file_sha256")


def test_loads_use_weights_only(tmp_path):
    """A file that needs arbitrary unpickling is refused by both kinds of checkpoint."""
    path = tmp_path / "evil.pt"
    torch.save({"kind": "unet", "config": {}, "state_dict": {}, "obj": np.dtype("float32")}, path)
    with pytest.raises(InputError, match="pickled Python objects"):
        supervised.load_model("unet", path)
    with pytest.raises(InputError, match="pickled Python objects"):
        prior_ckpt.load_checkpoint(path)


def test_an_h5_file_is_named_as_such(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = np.zeros((1, 4, 4), np.complex64)
    with pytest.raises(InputError, match="HDF5 file") as err:
        prior_ckpt.load_checkpoint(path)
    assert "pickled" not in str(err.value)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "t.pt"
    _prior_save(path, 1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable torch file"):
        prior_ckpt.load_checkpoint(path)

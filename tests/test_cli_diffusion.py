"""`mrdiff recon` routes diffusion methods to mrdiff.reconstruct (contract 3), with a fake denoiser."""

import json

import h5py
import numpy as np
import pytest
import torch

import mrdiff.priors
from recon.cli import main


class ShrinkDenoiser:
    """E[x0 | x] for a unit-variance complex Gaussian prior: ``x / (1 + sigma^2)`` (exact, no weights)."""

    sha256 = "f" * 64
    sigma_min = 0.01
    sigma_max = 20.0
    config: dict = {"kind": "test-shrink"}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1 + sigma.to(x.real.dtype)[:, None, None] ** 2)


@pytest.fixture
def fake_prior(monkeypatch):
    calls = []

    def load(path=None, device="cpu"):
        calls.append((path, str(device)))
        return ShrinkDenoiser()

    monkeypatch.setattr(mrdiff.priors, "load_prior", load)
    return calls


def _recon(tmp_path, src, name, *extra):
    out = tmp_path / name
    argv = ["recon", str(src), "--out", str(out), "--device", "cpu", "--nfe", "6", *extra]
    return main(argv), out


def test_pocs_routes_to_reconstruct(fake_prior, tmp_path, multicoil_h5, capsys):
    code, out = _recon(
        tmp_path, multicoil_h5, "p.h5", "--method", "pocs", "--samples", "2", "--prior", "x.pt"
    )
    assert code == 0, capsys.readouterr().err
    assert fake_prior == [("x.pt", "cpu")]
    with h5py.File(out) as f:
        assert f.attrs["method"] == "pocs" and f.attrs["prior_sha256"] == "f" * 64
        assert 1 <= int(f.attrs["nfe"]) <= 6 and int(f.attrs["samples"]) == 2
        assert f["std"].shape == f["reconstruction"].shape == (2, 32, 32)
        assert np.all(f["std"][()] >= 0) and np.all(np.isfinite(f["reconstruction"][()]))
        assert np.all(f["residual"][()] < 0.5)


def test_batching_does_not_change_results(fake_prior, tmp_path, multicoil_h5, capsys):
    recs = []
    for batch in ("1", "2"):
        code, out = _recon(tmp_path, multicoil_h5, f"b{batch}.h5", "--method", "pocs", "--batch", batch)
        assert code == 0, capsys.readouterr().err
        recs.append(h5py.File(out)["reconstruction"][()])
    np.testing.assert_allclose(recs[0], recs[1], rtol=1e-4, atol=1e-6)


def test_seed_changes_samples(fake_prior, tmp_path, multicoil_h5):
    a = _recon(tmp_path, multicoil_h5, "s0.h5", "--method", "pocs", "--seed", "0")[1]
    b = _recon(tmp_path, multicoil_h5, "s1.h5", "--method", "pocs", "--seed", "1")[1]
    assert not np.array_equal(h5py.File(a)["reconstruction"][()], h5py.File(b)["reconstruction"][()])


def test_ccdf_gets_a_baseline_init(fake_prior, tmp_path, multicoil_h5, capsys):
    code, out = _recon(tmp_path, multicoil_h5, "c.h5", "--method", "ccdf", "--set", "init=sense")
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        assert json.loads(f.attrs["params"]) == {"init": "sense"}


def test_unknown_diffusion_parameter(fake_prior, tmp_path, multicoil_h5, capsys):
    code, out = _recon(tmp_path, multicoil_h5, "u.h5", "--method", "pocs", "--set", "pocs.nonsense=3")
    assert code == 2 and "nonsense" in capsys.readouterr().err and not out.exists()


def test_samples_default_is_the_methods(fake_prior, tmp_path, multicoil_h5, capsys, monkeypatch):
    """Without --samples, recon averages the method's declared default_samples (and records it)."""
    from mrdiff.consistency import REGISTRY

    monkeypatch.setattr(REGISTRY["pocs"], "default_samples", 3)
    code, out = _recon(tmp_path, multicoil_h5, "k.h5", "--method", "pocs", "--no-heldout")
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        assert int(f.attrs["samples"]) == 3
        assert np.all(f["std"][()] >= 0) and np.any(f["std"][()] > 0)  # K > 1: a real spread


def test_kept_samples_average_to_the_mean(multicoil_h5):
    """reconstruct's K samples are what it averages: their mean is the returned mean."""
    from mrdiff.reconstruct import reconstruct
    from mrdiff.pipeline import _batch, volume_mask, MaskSpec
    from mrdiff.io import open_volume

    info = open_volume(multicoil_h5)
    y, op = _batch(info, [0], volume_mask(info, MaskSpec("random", 4.0, 0.08)), "cpu", None)
    gens = [torch.Generator().manual_seed(0)]
    res = reconstruct(y, op, "pocs", ShrinkDenoiser(), nfe=6, samples=4, generators=gens)
    assert res.samples.shape == (1, 4, *y.shape[-2:])
    assert torch.allclose(res.samples.mean(1), res.mean, atol=1e-6)
    assert not torch.allclose(res.samples[:, 0], res.samples[:, 1])  # independent draws

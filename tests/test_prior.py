"""The prior: denoiser contract, EDM preconditioning, safe checkpoints, shipped weights."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from mrdiff.config import from_dict, to_dict
from mrdiff.errors import InputError
from mrdiff.noise import complex_randn, make_generator
from mrdiff.priors import DEFAULT_PRIOR, build_denoiser, default_prior_path, load_prior
from mrdiff.priors.checkpoint import export_prior, save_checkpoint, sha256_file
from mrdiff.sampling import denoise
from mrdiff.training import init_state, restore

SMALL = {
    "model": {
        "channels": [8, 16],
        "res_blocks": [0, 1],
        "attention_levels": [1],
        "head_channels": 8,
        "emb_channels": 16,
        "groups": 4,
    },
    "data": {"resolution": 32},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _randomise(module: torch.nn.Module) -> None:
    """Non-zero weights everywhere (the zero-initialised output layers would hide errors)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def test_denoiser_contract_any_size_and_scalar_sigma():
    d = build_denoiser(to_dict(from_dict(SMALL)))
    _randomise(d)
    x = complex_randn((3, 37, 50), make_generator(0))
    out = d(x, torch.tensor([0.1, 1.0, 10.0]))
    assert out.shape == (3, 37, 50) and out.dtype == torch.complex64
    assert torch.allclose(d(x[:1], 0.5), d(x[:1], torch.tensor([0.5])))
    assert d.sigma_min == 0.002 and d.sigma_max == 80.0 and isinstance(d.config, dict)
    with pytest.raises(ValueError, match="complex"):
        d(x.real, 1.0)


def test_edm_preconditioning_limits():
    """Karras et al. 2022, Table 1: c_skip -> 1 and c_out -> 0 as sigma -> 0, so D(x, ~0) = x."""
    d = build_denoiser(to_dict(from_dict(SMALL)))
    _randomise(d)
    x = complex_randn((2, 32, 32), make_generator(1))
    assert torch.allclose(d(x, 1e-6), x, atol=1e-5)
    assert not torch.allclose(d(x, 1.0), x, atol=1e-2)


def test_magnitude_prior_returns_real_images():
    cfg = to_dict(from_dict({**SMALL, "model": {**SMALL["model"], "in_channels": 1}}))
    d = build_denoiser(cfg)
    _randomise(d)
    out = d(complex_randn((2, 32, 32), make_generator(2)), 0.3)
    assert out.imag.abs().max() == 0 and out.real.abs().max() > 0


def _prior_file(tmp_path: Path, config: dict) -> Path:
    d = build_denoiser(config)
    path = tmp_path / "prior.pt"
    export_prior({"config": config, "step": 3, "ema": d.model.state_dict()}, path)
    return path


def test_load_prior_roundtrip_and_sha(tmp_path):
    config = to_dict(from_dict(SMALL))
    path = _prior_file(tmp_path, config)
    d = load_prior(path)
    assert d.sha256 == sha256_file(path) and d.config == config
    assert not any(p.requires_grad for p in d.parameters())


def test_pickled_object_checkpoint_is_refused(tmp_path):
    config = to_dict(from_dict(SMALL))
    path = tmp_path / "evil.pt"
    torch.save({"format": "mrdiff-prior-v1", "config": config, "ema": {}, "x": argparse.Namespace(a=1)}, path)
    with pytest.raises(InputError, match="pickled Python objects"):
        load_prior(path)


def test_wrong_channel_weights_give_clear_error(tmp_path):
    config = to_dict(from_dict(SMALL))
    mag = to_dict(from_dict({**SMALL, "model": {**SMALL["model"], "in_channels": 1}}))
    state = {"config": config, "step": 1, "ema": build_denoiser(mag).model.state_dict()}
    save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="wrong channels or width"):
        load_prior(tmp_path / "bad.pt")


def test_resume_with_other_resolution_or_channels_is_refused(tmp_path):
    from mrdiff.training import _save

    cfg = from_dict(SMALL)
    _save(init_state(cfg, torch.device("cpu")), cfg, tmp_path)
    for change, key in [
        ({"data": {"resolution": 64}}, "data.resolution"),
        ({"model": {"in_channels": 1}}, "in_channels"),
    ]:
        other = from_dict({k: {**SMALL.get(k, {}), **change.get(k, {})} for k in ("model", "data")})
        with pytest.raises(InputError, match=key):
            restore(init_state(other, torch.device("cpu")), tmp_path / "last.pt", other)


@pytest.mark.parametrize("name", ["brain-patch", "brain128-cpu"])
def test_shipped_priors_load_without_network(name):
    path = default_prior_path().with_name(f"{name}.pt")
    d = load_prior(None) if name == DEFAULT_PRIOR else load_prior(path)
    expected = (path.parent / f"{name}.sha256").read_text().split()[0]
    assert d.sha256 == expected == sha256_file(path)
    assert path.stat().st_size < 20e6  # fp16 storage, at most 20 MB a prior
    x = complex_randn((1, 96, 80), make_generator(3))  # any size
    assert torch.isfinite(torch.view_as_real(denoise(d, x, 1.0, generators=[make_generator(4)]))).all()


def test_preset_describes_the_shipped_prior():
    """`mrdiff train --config brain-patch-cpu --init mrdiff/weights/brain-patch.pt` (the README's
    fine-tuning example) needs each preset's model to be its shipped prior's."""
    from mrdiff.config import resolve_config
    from mrdiff.priors.checkpoint import check_compatible

    for name, preset in [("brain-patch", "brain-patch-cpu"), ("brain128-cpu", "brain128-cpu")]:
        path = default_prior_path().with_name(f"{name}.pt")
        check_compatible(load_prior(path).config, to_dict(resolve_config(preset, [])), path)


def test_sample_verb_writes_grid_and_memorisation_report(tmp_path):
    import json

    from test_train import write_volumes

    from recon.cli import main

    write_volumes(tmp_path / "data" / "train")
    write_volumes(tmp_path / "data" / "val", n_files=1, seed=1)
    path = _prior_file(tmp_path, to_dict(from_dict(SMALL)))
    out = tmp_path / "grid.png"
    args = ["sample", "--prior", str(path), "-n", "2", "--steps", "2", "--out", str(out)]
    assert main(args + ["--data", str(tmp_path / "data")]) == 0
    report = json.loads(out.with_suffix(".json").read_text())["memorisation"]
    assert len(report["sample_nearest_rms"]) == 2 and report["val_images"] == 4
    assert out.is_file() and (tmp_path / "grid_nearest.png").is_file()
    assert main(["sample", "--prior", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2


def test_autoguidance_combines_prior_and_guide_inside_its_interval():
    """Karras et al. 2024, Eq. 2: D0 + w (D1 - D0) where sigma lies in the interval, D1 elsewhere."""
    from mrdiff.priors.guidance import AutoGuided

    prior, guide = (build_denoiser(to_dict(from_dict(SMALL))) for _ in range(2))
    _randomise(prior)
    with torch.no_grad():
        for p in guide.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    x = complex_randn((3, 32, 32), make_generator(4))
    sigma = torch.tensor([0.1, 1.0, 20.0])
    guided = AutoGuided(prior, guide, 2.5, 0.5, 10.0)
    with torch.no_grad():
        d1, d0, out = prior(x, sigma), guide(x, sigma), guided(x, sigma)
        assert not torch.allclose(d0, d1)
        assert torch.allclose(out[1], d0[1] + 2.5 * (d1[1] - d0[1]), atol=1e-6)
        assert torch.equal(out[0], d1[0]) and torch.equal(out[2], d1[2])  # outside the interval
        assert torch.equal(AutoGuided(prior, guide, 1.0, 0.0, 80.0)(x, sigma), d1)  # w = 1: the prior
        assert torch.allclose(AutoGuided(prior, prior, 3.0, 0.0, 80.0)(x, sigma), d1, atol=1e-6)
    assert guided.sigma_max == prior.sigma_max and guided.config is prior.config
    magnitude = build_denoiser(to_dict(from_dict({**SMALL, "model": {**SMALL["model"], "in_channels": 1}})))
    with pytest.raises(InputError, match="channels"):
        AutoGuided(prior, magnitude, 2.0, 0.4, 80.0)
    with pytest.raises(InputError, match="weight"):
        AutoGuided(prior, guide, 0.5, 0.4, 80.0)


def test_sample_verb_with_a_guide_records_it(tmp_path):
    import json

    from recon.cli import main

    path = _prior_file(tmp_path, to_dict(from_dict(SMALL)))
    out = tmp_path / "grid.png"
    args = [
        "sample",
        "--prior",
        str(path),
        "-n",
        "2",
        "--steps",
        "2",
        "--out",
        str(out),
        "--guide",
        str(path),
    ]
    assert main(args + ["--guidance", "2.5", "--guidance-interval", "0.3", "50"]) == 0
    guidance = json.loads(out.with_suffix(".json").read_text())["autoguidance"]
    assert guidance["weight"] == 2.5 and guidance["interval"] == [0.3, 50.0]
    assert guidance["guide_sha256"] == sha256_file(path)
    assert main(args[:-1] + [str(tmp_path / "missing.pt")]) == 2
    assert main(args + ["--guidance", "0.5"]) == 2


def test_scale_calibration_comes_from_the_prior(tmp_path, monkeypatch):
    """A prior's ``meta.scale_calibration`` is what reconstruction multiplies the scale by; a prior
    without one (every shipped prior) gets the documented default 1.175."""
    import mrdiff.reconstruct as rec
    from mrdiff.operators import CartesianOperator
    from mrdiff.priors.checkpoint import DEFAULT_SCALE_CALIBRATION

    config = to_dict(from_dict(SMALL))
    state = {"config": config, "step": 3, "ema": build_denoiser(config).model.state_dict()}
    export_prior(state, tmp_path / "own.pt", meta={"scale_calibration": 2.5})
    assert load_prior(tmp_path / "own.pt").scale_calibration == 2.5
    assert load_prior(_prior_file(tmp_path, config)).scale_calibration == DEFAULT_SCALE_CALIBRATION == 1.175
    assert load_prior(None).scale_calibration == 1.175  # shipped weights: the default, files unchanged
    export_prior(state, tmp_path / "bad.pt", meta={"scale_calibration": -1})
    with pytest.raises(InputError, match="scale_calibration"):
        load_prior(tmp_path / "bad.pt")
    seen = []
    real = rec.estimate_scale
    monkeypatch.setattr(rec, "estimate_scale", lambda *a, **k: seen.append(k["calibration"]) or real(*a, **k))
    y = complex_randn((1, 1, 32, 32), make_generator(5))
    op = CartesianOperator(torch.ones(32, dtype=torch.bool))
    rec.reconstruct(y, op, "pocs", load_prior(tmp_path / "own.pt"), nfe=2, generators=[make_generator(6)])
    assert seen == [2.5]
    scale = rec.estimate_scale(y, op, calibration=1.0)
    torch.testing.assert_close(rec.estimate_scale(y, op, calibration=2.5), 2.5 * scale)

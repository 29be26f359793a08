"""`mrdiff bench` end to end on tiny mock data with a closed-form Gaussian prior and tiny networks."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from conftest import write_mock
from fastmri.data.transforms import center_crop
from fastmri.evaluate import nmse, psnr, ssim

import recon.verbs.bench as bench
from benchmarks.config import pick_slices
from benchmarks.harness import MethodConfig, is_current, plan, prewarm_maps
from benchmarks.report import aggregate_rows
from benchmarks.sweep import choose
from mrdiff import pipeline, supervised
from mrdiff.coils import estimate_maps
from mrdiff.errors import InputError
from mrdiff.io import open_volume, read_slice
from mrdiff.masks import make_mask
from mrdiff.operators import CartesianOperator
from mrdiff.pipeline import volume_mask
from mrdiff.priors.gaussian import GaussianPrior

N = 64


def _fake_prior(prior, device):
    return GaussianPrior(torch.zeros(N, N, dtype=torch.complex64), torch.full((N, N), 0.3))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    for split, n in (("val", 1), ("test", 2)):
        (root / split).mkdir()
        for i in range(n):
            write_mock(
                root / split / f"{split}{i}.h5", layout="prepared", slices=3, coils=4, H=N, W=N, seed=i
            )
    for kind in ("unet", "varnet"):
        supervised.save_checkpoint(
            root / f"{kind}.pt", kind, supervised.build_model(kind), supervised.PRESETS[kind]
        )
    params = root / "params.yaml"
    params.write_text(
        "methods:\n"
        f"  unet: {{method: unet, params: {{weights: {root / 'unet.pt'}}}}}\n"
        f"  varnet: {{method: varnet, params: {{weights: {root / 'varnet.pt'}}}}}\n"
        "  cs-l1: {method: cs-l1, params: {lamda: 0.01, iters: 10}}\n"
        "  ccdf: {method: ccdf, nfe: 3, params: {init: sense}}\n"
    )
    return root, params


def _argv(root, params, out, *extra):
    return [
        "--data",
        str(root),
        "--out",
        str(out),
        "--quick",
        "--methods",
        "zf,cs-l1,unet,varnet,pocs,ccdf",
        "--masks",
        "random,equispaced",
        "--accels",
        "4",
        "--params",
        str(params),
        *extra,
    ]


@pytest.fixture(scope="module")
def quick_run(setup, tmp_path_factory):
    root, params = setup
    out = tmp_path_factory.mktemp("out")
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setattr(bench, "load_denoiser", _fake_prior)
    mp.setattr(bench, "prior_identity", lambda prior: "")  # the fake prior has no file (sha256 "")
    assert bench.main(_argv(root, params, out)) == 0
    mp.undo()
    return root, params, out


def test_quick_writes_tables_and_figures(quick_run):
    root, params, out = quick_run
    md = (out / "results.md").read_text()
    assert "mrdiff bench --data" in md and "### random 4x" in md and "varnet (shift)" in md
    for name in ("results.csv", "metrics_per_volume.csv", "psnr_vs_nfe.png", "slices_random_4x.png"):
        assert (out / name).stat().st_size > 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["method"] for r in rows} == {"zf", "cs-l1", "unet", "varnet", "pocs", "ccdf"}
    assert all(r["device"] == "cpu" and float(r["seconds_per_slice"]) > 0 for r in rows)
    assert {r["nfe"] for r in rows if r["method"] == "pocs"} == {"4"}  # --quick NFE


def test_bench_files_record_the_resolved_run(quick_run):
    """Every bench reconstruction file carries the resolved parameters, CCDF's implicit initialiser,
    the mask spec and the software, like `mrdiff recon`'s (mrdiff.provenance.run_record)."""
    root, _, out = quick_run
    (ccdf,) = (out / "recons").glob("ccdf__random__4x*")
    with h5py.File(next(ccdf.glob("*.h5"))) as f:
        params, init = json.loads(f.attrs["params"]), json.loads(f.attrs["init"])
        named = json.loads(f.attrs["params_set"]).get("init", pipeline.DEFAULT_INIT)
        mask_spec, version = json.loads(f.attrs["mask_spec"]), f.attrs["mrdiff_version"]
        assert int(f.attrs["nfe_requested"]) == 4
        assert int(f.attrs["samples"]) == pipeline.diffusion_methods()["ccdf"].default_samples  # resolved K
    assert {"sigma_t0", "sampler", "lam"} <= set(params) and "init" not in params
    assert init == {"method": named, "params": pipeline.method_defaults(named)}
    assert mask_spec == {"kind": "random", "accel": 4.0, "center_fraction": 0.08, "seed": None}
    assert version


def test_resume_skips_finished_cells(quick_run, monkeypatch):
    root, params, out = quick_run
    monkeypatch.setattr(bench, "load_denoiser", lambda *a: pytest.fail("prior loaded for finished cells"))
    monkeypatch.setattr(bench, "prior_identity", lambda prior: "")
    assert bench.main(_argv(root, params, out)) == 0
    stats = json.loads((out / "bench.json").read_text())
    assert stats["ran"] == 0 and stats["skipped"] == 12
    # the keys publish copies
    assert sorted(stats["cells"]) == sorted(p.stem for p in (out / "cells").glob("*.json"))
    victim = next((out / "cells").glob("zf__random*.json"))
    victim.unlink()
    assert bench.main(_argv(root, params, out)) == 0
    stats = json.loads((out / "bench.json").read_text())
    assert stats["ran"] == 1 and stats["skipped"] == 11 and victim.exists()


def test_rerun_with_another_prior_recomputes_only_diffusion_cells(setup, tmp_path, monkeypatch):
    root, params = setup
    monkeypatch.setattr(bench, "load_denoiser", _fake_prior)
    argv = [*_argv(root, params, tmp_path)[:6], "zf,pocs", *_argv(root, params, tmp_path)[7:]]
    monkeypatch.setattr(bench, "prior_identity", lambda prior: "")
    assert bench.main(argv) == 0

    def swapped(prior, device):
        d = _fake_prior(prior, device)
        d.sha256 = "b" * 64
        return d

    monkeypatch.setattr(bench, "load_denoiser", swapped)
    monkeypatch.setattr(bench, "prior_identity", lambda prior: "b" * 64)
    assert bench.main(argv) == 0
    stats = json.loads((tmp_path / "bench.json").read_text())
    assert stats["ran"] == 2 and stats["skipped"] == 2  # pocs reran on both masks, zf did not
    cells = [json.loads(p.read_text()) for p in (tmp_path / "cells").glob("pocs__*.json")]
    assert len(cells) == 2 and all(c["prior_sha256"] == "b" * 64 for c in cells)


def test_rerun_on_other_slices_recomputes_the_cells(setup, tmp_path):
    """A finished cell is reused only for the same slices: a 1-slice record never fills a 2-slice table."""
    root, params = setup
    argv = [*_argv(root, params, tmp_path)[:6], "zf", *_argv(root, params, tmp_path)[7:]]
    assert bench.main(argv) == 0
    assert bench.main(argv + ["--slices-per-volume", "2"]) == 0
    stats = json.loads((tmp_path / "bench.json").read_text())
    assert stats["ran"] == 2 and stats["skipped"] == 0
    record = json.loads(next((tmp_path / "cells").glob("zf__random*.json")).read_text())
    assert all(len(v["slices"]) == v["n_slices"] == 2 for v in record["volumes"])
    for v in record["volumes"]:  # a record from before slice indices were stored: matched on the count
        del v["slices"]
    cell = plan([MethodConfig(**record["method"])], ["random"], [4.0], 1)[0]
    wanted = {v["volume"]: [0, 1] for v in record["volumes"]}
    assert is_current(record, cell, None, wanted)
    assert not is_current(record, cell, None, {name: [0] for name in wanted})
    assert not is_current(record, cell, None, {**wanted, "other.h5": [0, 1]})


def test_aggregate_matches_fastmri_evaluate(quick_run):
    root, _, out = quick_run
    rows = [r for r in csv.DictReader(open(out / "results.csv")) if r["mask"] == "random"]
    for row in rows:
        cells = sorted((out / "recons").glob(f"{row['method']}__random__4x*"))
        vals = {"NMSE": [], "PSNR": [], "SSIM": []}
        for vol in sorted((root / "test").glob("*.h5")):
            with h5py.File(cells[0] / vol.name) as f:
                rec, idx = f["reconstruction"][()], json.loads(f.attrs["slices"])
            with h5py.File(vol) as f:
                gt = f["reconstruction_rss"][()][idx]
            size = (gt.shape[-1], gt.shape[-1])
            gt, rec = center_crop(gt, size), center_crop(rec, size)
            vals["NMSE"].append(nmse(gt, rec))
            vals["PSNR"].append(psnr(gt, rec))
            vals["SSIM"].append(ssim(gt, rec))
        for name, v in vals.items():
            assert float(row[f"{name}_mean"]) == pytest.approx(np.mean(v), rel=1e-6)
            assert float(row[f"{name}_2std"]) == pytest.approx(2 * np.std(v, ddof=1), rel=1e-6, abs=1e-9)


def test_sweep_refuses_test_and_chooses_best(setup, tmp_path):
    root, _ = setup
    with pytest.raises(InputError, match="val"):
        bench.main(["--data", str(root), "--split", "test", "--sweep", "--out", str(tmp_path / "s")])
    agg = [
        {"method": "cs-l1@lamda=0.1", "nfe": 0, "PSNR_mean": 20.0},
        {"method": "cs-l1@lamda=0.01", "nfe": 0, "PSNR_mean": 25.0},
        {"method": "pocs", "nfe": 10, "PSNR_mean": 29.9},
        {"method": "pocs", "nfe": 40, "PSNR_mean": 30.0},
    ]
    configs = [
        MethodConfig("cs-l1@lamda=0.1", "cs-l1", {"lamda": 0.1}, 0),
        MethodConfig("cs-l1@lamda=0.01", "cs-l1", {"lamda": 0.01}, 0),
        MethodConfig("pocs", "pocs", {}, 10),
        MethodConfig("pocs", "pocs", {}, 40),
    ]
    best = choose(agg, configs)
    assert best["cs-l1"]["params"] == {"lamda": 0.01}
    assert best["pocs"]["nfe"] == 10  # within the tolerance of the best at a quarter of the cost


def test_supervised_roundtrip_and_bad_checkpoint(setup, tmp_path):
    root, _ = setup
    y = torch.randn(2, 4, N, N, dtype=torch.complex64)
    for kind, mask in (
        ("unet", make_mask("random", (N, N), 4, 0.08, "a")),
        ("varnet", make_mask("poisson", (N, N), 4, 0.08, "a")),
    ):
        maps = torch.randn(2, 4, N, N, dtype=torch.complex64)
        maps = maps / maps.abs().square().sum(1, keepdim=True).sqrt()
        x = supervised.SUPERVISED[kind](
            y * mask, CartesianOperator(mask, maps), weights=str(root / f"{kind}.pt")
        )
        assert x.shape == (2, N, N) and x.dtype == torch.complex64 and torch.isfinite(x).all()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        supervised.load_model("unet", bad)
    with pytest.raises(InputError, match="not a mrdiff varnet"):
        supervised.load_model("varnet", root / "unet.pt")
    assert set(supervised.SUPERVISED) <= set(pipeline.all_methods())


def test_maps_cache_is_shared_and_exact(setup, monkeypatch):
    """Methods in one cell group share one ESPIRiT estimate, equal to a fresh one."""
    import benchmarks.harness as harness

    root, _ = setup
    info = open_volume(root / "val" / "val0.h5")
    cell = plan([MethodConfig("zf", "zf")], ["equispaced"], [4], 1)[0]
    cache: dict = {}
    calls = []
    monkeypatch.setattr(harness, "estimate_maps", lambda y, m: calls.append(1) or estimate_maps(y, m))
    assert prewarm_maps([info], cell, {info.path.name: [0]}, cache) > 0 and len(cache) == 1
    prewarm_maps([info], cell, {info.path.name: [0]}, cache)
    assert len(calls) == 1 and len(cache) == 1  # already cached: not estimated again
    mask = volume_mask(info, cell.mask_spec)
    k = read_slice(info, 0).kspace
    ((key, maps),) = cache.items()
    assert key == pipeline.maps_key(info, 0, mask) and torch.equal(maps, estimate_maps(k * mask, mask))
    a = pipeline.reconstruct_volume(info, pipeline.MethodSpec("sense"), cell.mask_spec, [0], maps_cache=cache)
    b = pipeline.reconstruct_volume(info, pipeline.MethodSpec("sense"), cell.mask_spec, [0])
    assert np.array_equal(a.reconstruction, b.reconstruction)


def test_plan_and_slices_validate():
    cfg = [MethodConfig("zf", "zf")]
    assert len(plan(cfg, ["random", "poisson"], [4, 8], 2)) == 8
    with pytest.raises(InputError):
        plan(cfg, ["spiral"], [4], 1)
    assert pick_slices(20, 4) == [3, 7, 12, 16] and pick_slices(3, 5) == [0, 1, 2]
    assert aggregate_rows([]) == []


@pytest.mark.parametrize("init", ["nonsense", "dds"])
def test_bench_refuses_a_bad_init_before_any_cell(init):
    """A params row whose CCDF init is not a baseline/supervised method is a one-line error up front."""
    from benchmarks.config import method_config

    table = {"ccdf-x": {"method": "ccdf", "params": {"init": init}}}
    with pytest.raises(InputError, match="row 'ccdf-x': init"):
        method_config("ccdf-x", table)


def test_nfe_curves_summarise_bench_cells(quick_run, tmp_path):
    """benchmarks.nfe_curves reads a bench folder's cells: curves for the diffusion rows only, the
    baselines as references, and the saturation NFE against the long run."""
    from benchmarks.nfe_curves import main as nfe_main
    from benchmarks.nfe_curves import saturation

    _, _, out = quick_run
    assert nfe_main([str(out), "--out", str(tmp_path / "nfe"), "--reference-nfe", "4"]) == 0
    md = (tmp_path / "nfe" / "nfe_curves.md").read_text()
    rows = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert sorted(set(rows) - {"| method"}) == ["| ccdf", "| pocs"] and "- cs-l1:" in md
    assert (tmp_path / "nfe" / "psnr_vs_nfe.png").stat().st_size > 0
    assert saturation({5: 20.0, 10: 21.8, 50: 22.0, 1000: 22.05}, 22.05, 0.3) == 10
    assert saturation({5: 20.0, 1000: 19.0}, 19.0, 0.3) == 5  # no gain past NFE 5
    assert saturation({5: 20.0}, None, 0.3) is None
    with pytest.raises(InputError, match="no cell records"):
        nfe_main([str(tmp_path), "--out", str(tmp_path / "x")])

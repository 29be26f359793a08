"""Does held-out k-space error rank reconstructions like the true error? (issue 13, item 3)

For each mask kind, every configuration (methods x parameters) reconstructs a few central `val`
slices with all data (scored against ground truth: per-slice NMSE, volume PSNR) and once without each
of the folds that together hold out every measured line/point outside the centre (10 % each,
``Split(folds=COVER)``), or with ``--region centre`` every line of the fully sampled centre, one per
fold. From those fold errors come four no-reference scores:

- ``first``: the first fold alone (what ``mrdiff recon`` records as ``heldout_error``);
- ``mean3``: the mean of the first 3 fold ratios (what ``--auto`` minimises by default);
- ``mean``: the mean of all fold ratios (``--auto-folds all``);
- ``pooled``: all folds pooled by held-out energy (``--auto-folds all --auto-score pooled``).

Printed per mask and score: Spearman rho against true NMSE over all (configuration, slice) pairs, its
mean over slices, rho of the per-configuration means, and the PSNR given up by picking the
configuration with the lowest score instead of the best one.

Usage (val only; ~10 min for the classical rows on one CPU thread, ~2 min per diffusion row)::

    nice -n 10 python -m benchmarks.heldout_rank --data data/open-brain-128/val --slices 3 \
        --masks random,equispaced,poisson --accel 4 [--diffusion] [--json runs/heldout_rank.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tuning_common import (
    add_region_argument,
    eval_slices,
    mask_spec,
    psnr,
    slice_nmse,
    spearman,
    targets,
    val_volume,
)
from mrdiff.io import center_crop
from mrdiff.pipeline import MethodSpec, _batch, _runner, volume_mask
from mrdiff.tuning import COVER, OUTER, Split, fold_parts, fold_ratios, holdout_sets, pooled_error

CLASSICAL = [
    ("zf", {}),
    ("sense", {"iters": 3}),
    ("sense", {"iters": 10}),
    ("sense", {"iters": 30}),
    ("cs-l1", {"lamda": 1e-4}),
    ("cs-l1", {"lamda": 1e-3}),
    ("cs-l1", {"lamda": 1e-2}),
    ("cs-l1", {"lamda": 1e-1}),
    ("cs-tv", {"lamda": 1e-3}),
    ("cs-tv", {"lamda": 1e-2}),
    ("cs-tv", {"lamda": 1e-1}),
]
#: diffusion rows at NFE 10 (CPU), one sample: (method, params, nfe); CCDF from each of its starts
DIFFUSION = [
    ("pocs", {}, 10),
    ("ccdf", {"init": "unet", "sigma_t0": 0.05}, 10),
    ("ccdf", {"init": "unet", "sigma_t0": 0.15}, 10),
    ("ccdf", {"init": "unet", "sigma_t0": 0.4}, 10),
    ("ccdf", {"init": "cs-l1", "sigma_t0": 0.02}, 10),
    ("ccdf", {"init": "cs-l1", "sigma_t0": 0.15}, 10),
    ("dds", {}, 10),
    ("dds", {"damping": 0.1}, 10),
]
SCORES = ("first", "mean3", "mean", "pooled")


def rows(args) -> list[tuple[str, dict, int]]:
    """The configurations to compare."""
    out = [(m, p, 0) for m, p in CLASSICAL]
    return out + (DIFFUSION if args.diffusion else [])


def scores(num: torch.Tensor, den: torch.Tensor) -> dict:
    """Per-slice no-reference scores (:data:`SCORES`) from cover-fold parts ``(folds, B)``."""
    ratio = fold_ratios(num, den).numpy()
    return {
        "first": ratio[0],
        "mean3": ratio[:3].mean(0),
        "mean": ratio.mean(0),
        "pooled": pooled_error(num, den).numpy(),
    }


def run_mask(
    info, kind: str, accel: float, slices: list[int], configs, denoiser_fn, region: str = OUTER
) -> dict:
    """No-reference scores and true NMSE of every configuration on one mask; ``region``: where the folds
    hold out (``Split.region``; every outer line/point or every centre line once)."""
    target, cache, out = targets(info, slices), {}, []
    mask = volume_mask(info, mask_spec(kind, accel))
    y, op = _batch(info, slices, mask, "cpu", cache)
    sets = holdout_sets(mask, tuple(y.shape[-2:]), Split(0.1, COVER, 0, region=region))
    for name, params, nfe in configs:
        spec = MethodSpec(name, params, denoiser_fn() if nfe else None, nfe or 50)
        run = _runner(spec, info, slices)
        parts = fold_parts(run, y, op, {}, sets)
        recon = np.abs(center_crop(run(y, op, {}), info.recon_size).numpy())
        out.append(
            {
                "method": name,
                "params": params,
                "nfe": nfe,
                **{k: v.tolist() for k, v in scores(*parts).items()},
                "nmse": slice_nmse(target, recon).tolist(),
                "psnr": psnr(target, recon),
            }
        )
    summary = {score: summarise(out, score) for score in SCORES}
    head = {"mask": kind, "accel": accel, "slices": slices, "region": region, "folds": len(sets)}
    return {**head, "rows": out, **summary}


def summarise(out: list[dict], score: str) -> dict:
    """Rank statistics of one mask's rows under one no-reference ``score``."""
    ho, nm = np.array([r[score] for r in out]), np.array([r["nmse"] for r in out])
    pick = int(np.argmin(ho.mean(1)))
    best = int(np.argmax([r["psnr"] for r in out]))
    return {
        "rho_pooled": spearman(ho.ravel(), nm.ravel()),
        "rho_per_slice_mean": float(np.mean([spearman(ho[:, s], nm[:, s]) for s in range(ho.shape[1])])),
        "rho_of_means": spearman(ho.mean(1), nm.mean(1)),
        "picked": out[pick]["method"] + json.dumps(out[pick]["params"]),
        "best": out[best]["method"] + json.dumps(out[best]["params"]),
        "psnr_loss_db": out[best]["psnr"] - out[pick]["psnr"],
    }


def main(argv: list[str] | None = None) -> int:
    """Print Spearman rho per mask kind."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/open-brain-128/val"), help="val split directory")
    p.add_argument("--slices", type=int, default=3, help="central val slices")
    p.add_argument("--masks", default="random,equispaced,poisson", help="comma-separated mask kinds")
    p.add_argument("--accel", type=float, default=4.0, help="acceleration")
    p.add_argument("--diffusion", action="store_true", help="add diffusion rows (shipped prior, NFE 10)")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    add_region_argument(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = val_volume(args.data)
    slices = eval_slices(info, args.slices)
    cache: dict = {}

    def denoiser_fn():
        if "d" not in cache:
            from mrdiff.priors import load_prior

            cache["d"] = load_prior(None)
        return cache["d"]

    results, t0 = [], time.perf_counter()
    for kind in args.masks.split(","):
        res = run_mask(info, kind, args.accel, slices, rows(args), denoiser_fn, args.region)
        results.append(res)
        for score in SCORES:
            r = res[score]
            print(
                f"{kind:>10} {args.accel:g}x {score:>6} ({res['folds']} folds)  "
                f"rho(pairs)={r['rho_pooled']:.3f}  rho(per slice, mean)={r['rho_per_slice_mean']:.3f}  "
                f"rho(config means)={r['rho_of_means']:.3f}  "
                f"lowest: {r['picked']} (-{r['psnr_loss_db']:.2f} dB vs best {r['best']})",
                flush=True,
            )
    seconds = time.perf_counter() - t0
    print(f"{info.path.name}, slices {slices}, {len(rows(args))} configurations, {seconds:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

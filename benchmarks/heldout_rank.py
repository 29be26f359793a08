"""Does held-out k-space error rank reconstructions like the true error? (issue 13, item 3)

For each mask kind, every configuration (methods x parameters) reconstructs a few central `val`
slices twice, as ``mrdiff recon`` does by default: with all data (scored against ground truth,
per-slice NMSE) and without the first held-out fold (10% of the measured lines/points outside the
centre; its held-out error needs no ground truth). Printed per mask: Spearman rho between held-out
error and true NMSE over all (configuration, slice) pairs, the mean per-slice rho across
configurations, rho of the per-configuration means, and the PSNR given up by picking the
configuration with the lowest mean held-out error instead of the best one.

Usage (val only; a few slices, ~2-5 min for the classical rows on 2 CPU cores)::

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

from benchmarks.tuning_common import eval_slices, mask_spec, psnr, slice_nmse, spearman, targets, val_volume
from mrdiff.pipeline import MethodSpec, reconstruct_volume
from mrdiff.tuning import Split

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
#: diffusion rows at NFE 10 (CPU): (method, params, nfe)
DIFFUSION = [
    ("pocs", {}, 10),
    ("ccdf", {"sigma_t0": 0.1}, 10),
    ("ccdf", {"sigma_t0": 0.4}, 10),
    ("dds", {}, 10),
    ("dds", {"damping": 0.1}, 10),
]


def rows(args) -> list[tuple[str, dict, int]]:
    """The configurations to compare."""
    out = [(m, p, 0) for m, p in CLASSICAL]
    return out + (DIFFUSION if args.diffusion else [])


def run_mask(info, kind: str, accel: float, slices: list[int], configs, denoiser_fn) -> dict:
    """Held-out error and true NMSE of every configuration on one mask."""
    target, cache, out = targets(info, slices), {}, []
    for name, params, nfe in configs:
        den = denoiser_fn() if nfe else None
        spec = MethodSpec(name, params, den, nfe or 50)
        r = reconstruct_volume(info, spec, mask_spec(kind, accel), slices, maps_cache=cache, heldout=Split())
        out.append(
            {
                "method": name,
                "params": params,
                "nfe": nfe,
                "heldout": r.heldout_error.tolist(),
                "nmse": slice_nmse(target, r.reconstruction).tolist(),
                "psnr": psnr(target, r.reconstruction),
            }
        )
    return {"mask": kind, "accel": accel, "slices": slices, "rows": out, **summarise(out)}


def summarise(out: list[dict]) -> dict:
    """Rank statistics of one mask's rows."""
    ho, nm = np.array([r["heldout"] for r in out]), np.array([r["nmse"] for r in out])
    per_slice = [spearman(ho[:, s], nm[:, s]) for s in range(ho.shape[1])]
    pick = int(np.argmin(ho.mean(1)))
    best = int(np.argmax([r["psnr"] for r in out]))
    return {
        "rho_pooled": spearman(ho.ravel(), nm.ravel()),
        "rho_per_slice_mean": float(np.mean(per_slice)),
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
        res = run_mask(info, kind, args.accel, slices, rows(args), denoiser_fn)
        results.append(res)
        print(
            f"{kind:>10} {args.accel:g}x  rho(pooled)={res['rho_pooled']:.3f}  "
            f"rho(per slice, mean)={res['rho_per_slice_mean']:.3f}  "
            f"rho(config means)={res['rho_of_means']:.3f}  "
            f"lowest held-out: {res['picked']} (-{res['psnr_loss_db']:.2f} dB vs best {res['best']})",
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

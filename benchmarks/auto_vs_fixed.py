"""Auto (held-out k-space cross-validation) vs fixed vs oracle parameters on `val` (issue 13).

For each method x mask x acceleration, on a few central `val` slices:

* fixed: the parameters `mrdiff bench` uses (``benchmarks/params/open-brain-128.yaml``, else the
  method's defaults);
* auto: ``mrdiff recon --auto`` (:func:`mrdiff.pipeline.tune_volume` on the central ``--auto-slices``
  of the evaluated slices, no ground truth), then a reconstruction of all evaluated slices;
* oracle: the same coordinate-wise search over the same candidates, scored by ground-truth PSNR on
  the evaluated slices themselves (an upper bound that no real scan allows).

Usage (val only; keep it small on a shared CPU)::

    nice -n 10 python -m benchmarks.auto_vs_fixed --methods cs-l1 --masks random,poisson --accels 4,8 \
        --slices 4 --auto-slices 2
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from benchmarks.config import DEFAULT_PARAMS, method_config, read_params
from benchmarks.tuning_common import (
    add_folds_argument,
    eval_slices,
    mask_spec,
    one_line_errors,
    psnr,
    run_cells,
    targets,
    val_parser,
    val_volume,
)
from mrdiff.pipeline import (
    AutoSpec,
    MethodSpec,
    check_auto,
    method_defaults,
    reconstruct_volume,
    tune_volume,
)
from mrdiff.tuning import Split, candidates, in_range


def _psnr(info, spec, ms, slices, target, cache) -> float:
    return psnr(target, reconstruct_volume(info, spec, ms, slices, maps_cache=cache).reconstruction)


def oracle(info, spec, ms, slices, target, tunable, points, cache) -> tuple[dict, float, int]:
    """Coordinate-wise search over the tuner's candidates, scored by ground-truth PSNR (a candidate
    initialiser runs at its default parameters)."""
    current = {**method_defaults(spec.name), **spec.params}
    seen: dict = {}

    def score(params):
        key = json.dumps(params, sort_keys=True)
        if key not in seen:
            seen[key] = _psnr(info, replace(spec, params=params), ms, slices, target, cache)
        return seen[key]

    for name, rng in tunable.items():
        values = candidates(rng, points)
        if current.get(name) is not None and in_range(rng, current[name]) and current[name] not in values:
            values = [current[name], *values]
        current[name] = max(values, key=lambda v: score({**current, name: v}))
    return {k: current[k] for k in tunable}, score(current), len(seen)


def run_cell(info, label, table, kind, accel, args, den_fn, cache) -> dict:
    """Fixed, auto and oracle PSNR for one method on one mask."""
    cfg = method_config(label, table, args.nfe)
    spec = MethodSpec(cfg.name, dict(cfg.params), den_fn() if cfg.is_diffusion else None, cfg.nfe or 50)
    ms, slices = mask_spec(kind, accel), eval_slices(info, args.slices)
    target = targets(info, slices)
    auto = AutoSpec(None, Split(args.fraction, args.folds, 0), args.auto_slices, args.points, args.refine)
    tunable = check_auto(info, spec, ms, auto)
    fixed = _psnr(info, spec, ms, slices, target, cache)
    t0 = time.perf_counter()
    tuned = tune_volume(info, spec, ms, auto, cache, slices)
    auto_psnr = _psnr(info, replace(spec, params=tuned.params), ms, slices, target, cache)
    o_params, o_psnr, o_trials = oracle(info, spec, ms, slices, target, tunable, args.points, cache)
    fixed_vals = {k: {**method_defaults(spec.name), **spec.params}.get(k) for k in tunable}
    return {
        "method": label,
        "mask": kind,
        "accel": accel,
        "nfe": cfg.nfe,
        "slices": slices,
        "fixed": fixed_vals,
        "fixed_psnr": fixed,
        "auto": tuned.chosen,
        "auto_psnr": auto_psnr,
        "auto_trials": tuned.trials,
        "auto_seconds": round(time.perf_counter() - t0, 1),
        "oracle": o_params,
        "oracle_psnr": o_psnr,
        "oracle_trials": o_trials,
    }


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Print one line per (method, mask, acceleration)."""
    p = val_parser(__doc__, "random,poisson", "4,8")
    p.add_argument("--methods", default="cs-l1", help="comma-separated rows (params-file labels or methods)")
    p.add_argument("--slices", type=int, default=4, help="central val slices evaluated")
    p.add_argument("--auto-slices", type=int, default=2, help="central slices (of those) the tuner uses")
    add_folds_argument(p)
    p.add_argument("--fraction", type=float, default=0.1, help="held-out fraction per fold")
    p.add_argument("--points", type=int, default=7, help="grid points per parameter")
    p.add_argument("--refine", type=int, default=0, help="golden-section steps after the grid")
    p.add_argument("--nfe", type=int, default=None, help="NFE of diffusion rows (default: params file)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info, table, cache, dens = val_volume(args.data), read_params(DEFAULT_PARAMS), {}, {}

    def den_fn():
        if "d" not in dens:
            from mrdiff.priors import load_prior

            dens["d"] = load_prior(None)
        return dens["d"]

    def line(label, kind, accel, r) -> str:
        return (
            f"{label:>6} {kind:>10} {accel:g}x  fixed {r['fixed']} {r['fixed_psnr']:.2f} dB | "
            f"auto {r['auto']} {r['auto_psnr']:.2f} dB ({r['auto_trials']} recons, "
            f"{r['auto_seconds']} s) | oracle {r['oracle']} {r['oracle_psnr']:.2f} dB"
        )

    def run(label, kind, accel) -> dict:
        return run_cell(info, label, table, kind, accel, args, den_fn, cache)

    run_cells(args, args.methods, run, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

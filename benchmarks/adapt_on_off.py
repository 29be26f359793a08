"""Test-time adaptation of the prior (``mrdiff recon --adapt``) on vs off (issue 13, item 5).

For each method x mask x acceleration, on a few central slices of the first volume of ``--data``:
the method with the parameters `mrdiff bench` uses (``benchmarks/params/open-brain-128.yaml``), once
with the prior as it is and once with a LoRA adapter fitted to the volume
(:func:`mrdiff.pipeline.adapt_volume` on the central ``--adapt-slices``, fit set only, early-stopped
on held-out k-space; no ground truth), PSNR/SSIM against the reference and the cost in s/slice (the
fit's time spread over the evaluated slices).

The adaptation settings were looked at on `val` only; on `test` (PD contrast, a prior trained on T1
templates) this script only reports. Keep it small on a shared CPU::

    nice -n 5 python -m benchmarks.adapt_on_off --data ../main/data/open-brain-128/test \
        --methods ccdf,dds --masks random --accels 4,8 --slices 3 --json adapt.jsonl
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.config import DEFAULT_PARAMS, method_config, read_params
from benchmarks.tuning_common import eval_slices, mask_spec, one_line_errors, run_cells, targets
from mrdiff.adapt import AdaptSpec
from mrdiff.io import list_volumes, open_volume
from mrdiff.metrics import volume_metrics
from mrdiff.pipeline import MethodSpec, adapt_volume, reconstruct_volume
from mrdiff.tuning import Split


def _scores(info, spec, ms, slices, target, cache) -> dict:
    """PSNR, SSIM and s/slice of one reconstruction of ``slices``."""
    result = reconstruct_volume(info, spec, ms, slices, maps_cache=cache)
    m = volume_metrics(target, result.reconstruction)
    return {"PSNR": round(m["PSNR"], 3), "SSIM": round(m["SSIM"], 4), "s_per_slice": result.seconds_per_slice}


def run_cell(info, label, table, kind, accel, args, denoiser, cache) -> dict:
    """Off and on for one method on one mask."""
    cfg = method_config(label, table, args.nfe)
    spec = MethodSpec(cfg.name, dict(cfg.params), denoiser, cfg.nfe, seed=args.seed)
    ms, slices = mask_spec(kind, accel), eval_slices(info, args.slices)
    target = targets(info, slices)
    off = _scores(info, spec, ms, slices, target, cache)
    adapt = AdaptSpec(
        args.rank,
        args.steps,
        args.lr,
        args.sigma,
        args.patience,
        args.adapt_slices,
        Split(args.fraction, 1, 0),
        early_stop=not args.no_early_stop,
    )
    t0 = time.perf_counter()
    adapted, summary = adapt_volume(info, spec, ms, adapt, cache, slices)
    fit_s = time.perf_counter() - t0
    on = _scores(info, replace(spec, denoiser=adapted), ms, slices, target, cache)
    on["s_per_slice_with_fit"] = on["s_per_slice"] + fit_s / len(slices)
    return {
        "volume": info.path.name,
        "method": label,
        "mask": kind,
        "accel": accel,
        "nfe": cfg.nfe,
        "slices": slices,
        "off": off,
        "on": on,
        "gain_dB": round(on["PSNR"] - off["PSNR"], 3),
        "adapt": summary,
    }


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Print one line per (method, mask, acceleration)."""
    d = AdaptSpec()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="split directory (its first volume is used)")
    p.add_argument(
        "--methods", default="ccdf,dds", help="comma-separated rows (params-file labels or methods)"
    )
    p.add_argument("--masks", default="random", help="comma-separated mask kinds")
    p.add_argument("--accels", default="4,8", help="comma-separated accelerations")
    p.add_argument("--slices", type=int, default=3, help="central slices evaluated")
    p.add_argument("--nfe", type=int, default=None, help="NFE of diffusion rows (default: params file)")
    p.add_argument("--prior", default=None, help="prior file (default: the shipped patch prior)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--rank", type=int, default=d.rank, help="adapter rank")
    p.add_argument("--steps", type=int, default=d.steps, help="Adam steps per sampling step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--sigma", type=float, default=d.sigma, help="adapt at and below this sigma")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience")
    p.add_argument(
        "--adapt-slices", type=int, default=d.slices, help="central slices the adapter is fitted on"
    )
    p.add_argument("--fraction", type=float, default=d.split.fraction, help="held-out fraction")
    p.add_argument(
        "--no-early-stop",
        action="store_true",
        help="ablation: keep every step (as DDIP)",
    )
    p.add_argument("--json", type=Path, default=None, help="append every record here (JSON lines)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mrdiff.priors import load_prior

    info, table, cache, denoiser = (
        open_volume(list_volumes(args.data)[0]),
        read_params(DEFAULT_PARAMS),
        {},
        load_prior(args.prior),
    )

    def line(label, kind, accel, r) -> str:
        a = r["adapt"]
        return (
            f"{label:>5} {kind:>9} {accel:g}x off {r['off']['PSNR']:.2f} dB/{r['off']['SSIM']:.3f} "
            f"on {r['on']['PSNR']:.2f} dB/{r['on']['SSIM']:.3f} ({r['gain_dB']:+.2f}) | "
            f"s/slice {r['off']['s_per_slice']:.1f} -> {r['on']['s_per_slice_with_fit']:.1f} | "
            f"adapted {a['sampling_steps_adapted']} improved {a['sampling_steps_improved']}"
        )

    def run(label, kind, accel) -> dict:
        return run_cell(info, label, table, kind, accel, args, denoiser, cache)

    run_cells(args, args.methods, run, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

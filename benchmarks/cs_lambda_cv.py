"""What `--auto` sees along CS-L1's lambda, against what PSNR says, on `val` (issue 13).

For each mask x acceleration, on the central ``--slices`` slices of the `val` volume: CS-L1 (Lustig et
al., MRM 2007) over a 13-point log grid of lambda (1e-4 ... 0.1, four points a decade) with all data,
scored by volume PSNR against the ground truth; and, at every other grid point (the 7 points that
``--auto`` searches) and at the search's start (lambda in proportion to the scan's noise), the held-out
error of the tuner's default split (folds of 10 % covering every outer line of a line mask, 3 folds of a
2-D mask: :class:`mrdiff.tuning.Split`'s default; ``--folds 3``: the default before 2026-12-02) on the
central 3 of those slices, with the standard error over the (fold, slice) cells that ``tune`` uses, and
the folds' energy-pooled error. Also the data residual ``||A x - y||^2`` over the noise energy that the
measured samples carry (``2 sigma^2`` per complex sample, sigma from
:func:`mrdiff.noise.kspace_noise_sigma`): the ratio Morozov's discrepancy principle sets to 1.

    python -m benchmarks.cs_lambda_cv --data data/open-brain-128-45db/val --masks equispaced,random,poisson \
        --accels 8,4 --json runs/cs_lambda_cv.jsonl        # ~5 min per cell on one CPU thread
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.tuning_common import (
    add_folds_argument,
    append_jsonl,
    eval_slices,
    mask_spec,
    one_line_errors,
    psnr,
    targets,
    val_parser,
    val_volume,
)
from mrdiff.baselines import DEFAULT_LAMBDA, cs_l1
from mrdiff.io import center_crop
from mrdiff.noise import kspace_noise_sigma
from mrdiff.pipeline import _batch, central_slices, search_start, volume_mask
from mrdiff.tuning import (
    MIN_SKILL_ERROR,
    Split,
    cell_standard_error,
    fold_parts,
    fold_ratios,
    holdout_sets,
    pooled_error,
    replaces,
)

GRID = [float(f"{10 ** (-4 + k / 4):.4g}") for k in range(13)]


def discrepancy(x: torch.Tensor, y: torch.Tensor, op, sigma: torch.Tensor) -> np.ndarray:
    """Per item ``||M (A x - y)||^2 / (n_measured * 2 sigma^2)`` (1: the residual is the noise); ``sigma``
    ``(B,)`` from :func:`kspace_noise_sigma`, estimated once per cell."""
    mask = op.mask.to(y.device)
    count = torch.broadcast_to(mask, y.shape).flatten(1).bool().sum(1).double()
    res = (op.residual(x.to(y.dtype), y).double() * (y * mask).flatten(1).norm(dim=1).double()) ** 2
    return (res / (count * 2 * sigma**2)).numpy()


def run_cell(info, kind: str, accel: float, slices: list[int], split: Split) -> dict:
    """PSNR, discrepancy and (every other grid point, and the search's noise-proportional start,
    :func:`mrdiff.pipeline.search_start`) the held-out errors of ``split`` along :data:`GRID` (per
    (fold, slice) cell, with the energies that pool them)."""
    t0, mask, cache = time.perf_counter(), volume_mask(info, mask_spec(kind, accel)), {}
    y, op = _batch(info, slices, mask, "cpu", cache)
    tuned = central_slices(slices, 3)
    y3, op3 = _batch(info, tuned, mask, "cpu", cache)
    sets, target = holdout_sets(mask, tuple(y.shape[-2:]), split), targets(info, slices)
    sigma = kspace_noise_sigma(y).double()
    rec = {"snr_db": info.attrs.get("snr_db"), "mask": kind, "accel": accel, "slices": slices, "rows": []}
    start = search_start("cs-l1", y3, op3)["lamda"]
    rec["folds"], rec["region"], rec["start"] = len(sets), split.region, start
    for lam in sorted({*GRID, start}):
        x = cs_l1(y, op, lamda=lam)
        mag = np.stack([center_crop(v, info.recon_size) for v in x.abs().numpy()])
        row = {"lamda": lam, "psnr": psnr(target, mag), "discrepancy": discrepancy(x, y, op, sigma).tolist()}
        if lam in GRID[::2] or lam == start:
            num, den = fold_parts(lambda yy, o, p: cs_l1(yy, o, **p), y3, op3, {"lamda": lam}, sets)
            row["heldout"] = fold_ratios(num, den).flatten().tolist()
            row["pooled"] = pooled_error(num, den).tolist()
        rec["rows"].append(row)
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def would_pick(rec: dict) -> dict:
    """The grid row ``--auto`` would end on: the lowest held-out error among the searched points if it
    passes :func:`mrdiff.tuning.replaces` against the start lambda, else the start's row (records
    written before the noise-proportional start began at the fixed default)."""
    start = rec.get("start", DEFAULT_LAMBDA["cs-l1"])
    searched = {r["lamda"]: r for r in rec["rows"] if "heldout" in r}
    cells = {lam: torch.tensor(r["heldout"], dtype=torch.float64) for lam, r in searched.items()}
    best = min(cells, key=lambda lam: float(cells[lam].mean()))
    mine, theirs = cells[best], cells[start]
    folds = rec.get("folds", 1)
    keep = not replaces(float(mine.mean()), mine, float(theirs.mean()), theirs, MIN_SKILL_ERROR, folds)
    return searched[start if keep else best]


def line(row: dict, folds: int) -> str:
    """One grid point as a table row: lambda, PSNR, held-out error +- SE (the tuner's, over ``folds``
    folds), pooled error, discrepancy."""
    ho, pooled = torch.tensor(row.get("heldout", []), dtype=torch.float64), row.get("pooled")
    cv = f"{ho.mean():.3f} ± {cell_standard_error(ho, folds):.3f}" if ho.numel() else ""
    pool = f"{np.mean(pooled):.3f}" if pooled else ""
    return f"| {row['lamda']:.3g} | {row['psnr']:.2f} | {cv} | {pool} | {np.mean(row['discrepancy']):.2f} |"


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = val_parser(__doc__, "equispaced,random,poisson", "8,4")
    p.add_argument("--slices", type=int, default=4, help="central val slices scored by PSNR")
    add_folds_argument(p)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info, split = val_volume(args.data), Split(folds=args.folds, region=args.region)
    for kind in args.masks.split(","):
        for accel in args.accels.split(","):
            rec = run_cell(info, kind, float(accel), eval_slices(info, args.slices), split)
            best, pick = max(rec["rows"], key=lambda r: r["psnr"]), would_pick(rec)
            head = f"{rec['snr_db']} dB {kind} {float(accel):g}x, {rec['folds']} folds ({rec['seconds']} s)"
            oracle = f"oracle λ {best['lamda']:.3g} ({best['psnr']:.2f} dB)"
            print(f"\n{head}: {oracle}, --auto would pick λ {pick['lamda']:.3g} ({pick['psnr']:.2f} dB)")
            print("| λ | PSNR | held-out error ± SE | pooled | residual / noise |\n|---|---|---|---|---|")
            print("\n".join(line(r, rec["folds"]) for r in rec["rows"]), flush=True)
            append_jsonl(args.json, rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

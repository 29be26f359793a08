"""Does the held-out k-space error rank rows as the error on all unmeasured k-space does? (issue 13)

For each row on the central ``--slices`` slices of a `val` volume, tuned together as ``--auto`` does:

- the held-out error of every fold (reconstructed from the fit set, scored on the held-out samples:
  what ``--auto`` minimises);
- reconstructed from the full mask, the NMSE on **all** unmeasured k-space against the fully sampled
  data (``kspace`` in the file), ``||(1 - M)(A_full x - k)||^2 / ||(1 - M) k||^2`` per slice, with the
  same coil maps, and the fastMRI PSNR of the magnitude.

The held-out error is an estimate of the second from a few samples; where they disagree, the
held-out set is too small or unrepresentative. ``heldout_mean`` is what ``--auto`` scores (the mean of
per-fold errors, each normalised by its own held-out energy); ``heldout_pooled`` pools the folds by
energy, ``sum_f ||M_f (A x_f - y)||^2 / sum_f ||M_f y||^2`` per slice, as the unmeasured NMSE does.
Rows use ``benchmarks.posterior_k``'s syntax.

    python -m benchmarks.heldout_vs_unmeasured --data data/open-brain-128-45db/val --masks random \\
        --accels 4 --rows "ccdf:init=unet;sigma_t0=0.15,ccdf:init=cs-l1;init_lamda=0.000374;sigma_t0=0.0188"
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.config import DEFAULT_PARAMS, method_config, read_params
from benchmarks.posterior_k import parse_row
from benchmarks.tuning_common import (
    eval_slices,
    mask_spec,
    one_line_errors,
    psnr,
    run_cells,
    targets,
    val_parser,
    val_volume,
)
from mrdiff.io import center_crop, read_slice
from mrdiff.operators import CartesianOperator
from mrdiff.pipeline import MethodSpec, _batch, _runner, volume_mask
from mrdiff.tuning import Split, fold_parts, fold_ratios, holdout_sets, pooled_error


def unmeasured_nmse(x: torch.Tensor, kspace: torch.Tensor, op: CartesianOperator) -> np.ndarray:
    """Per item, ``||(1 - M)(F S x - k)||^2 / ||(1 - M) k||^2`` over every unmeasured sample ``(B,)``."""
    full = CartesianOperator(torch.ones_like(op.mask), op.maps)
    missing = 1 - op.mask.float()
    num = ((missing * (full.A(x) - kspace)).abs() ** 2).sum((1, 2, 3))
    return (num / ((missing * kspace).abs() ** 2).sum((1, 2, 3))).numpy()


def run_cell(info, label: str, kind: str, accel: float, args, denoiser) -> dict:
    """Held-out errors per fold, unmeasured-k-space NMSE per slice and PSNR of one row."""
    row = parse_row(label)
    cfg = method_config(row.base, read_params(DEFAULT_PARAMS), row.nfe)
    spec = MethodSpec(cfg.name, {**cfg.params, **row.params}, denoiser, cfg.nfe or 50, samples=args.samples)
    idx = eval_slices(info, args.slices)
    mask = volume_mask(info, mask_spec(kind, accel))
    y, op = _batch(info, idx, mask, "cpu", {})

    run = _runner(spec, info, idx)  # what --auto runs: per-slice seeds, each start computed once per fold
    sets = holdout_sets(mask, tuple(y.shape[-2:]), Split(args.fraction, args.folds, 0))
    num, den = fold_parts(run, y, op, {}, sets)  # (folds, B) each
    held, pooled = fold_ratios(num, den).numpy(), pooled_error(num, den).numpy()
    x = run(y, op, {})
    kspace = torch.stack([read_slice(info, i).kspace for i in idx])
    magnitude = np.abs(center_crop(x, info.recon_size).numpy())
    return {
        "row": label,
        "mask": kind,
        "accel": accel,
        "slices": idx,
        "samples": args.samples,
        "heldout_error": np.round(held, 4).tolist(),
        "heldout_mean": round(float(held.mean()), 4),
        "heldout_pooled": np.round(pooled, 4).tolist(),
        "heldout_pooled_mean": round(float(pooled.mean()), 4),
        "unmeasured_nmse": np.round(unmeasured_nmse(x, kspace, op), 4).tolist(),
        "PSNR": round(psnr(targets(info, idx), magnitude), 2),
    }


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Print one line per (row, mask, acceleration); append JSON records with ``--json``."""
    p = val_parser(__doc__, "random", "4")
    p.add_argument("--rows", required=True, help="comma-separated rows (benchmarks.posterior_k syntax)")
    p.add_argument("--slices", type=int, default=3, help="central slices, tuned together (default 3)")
    p.add_argument("--samples", type=int, default=4, help="posterior samples averaged (default 4)")
    p.add_argument("--folds", type=int, default=2, help="held-out folds (default 2)")
    p.add_argument("--fraction", type=float, default=0.1, help="held-out fraction per fold (default 0.1)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mrdiff.priors import load_prior

    info, denoiser = val_volume(args.data), load_prior(None)

    def line(label, kind, accel, r) -> str:
        return (
            f"{label} {kind} {accel:g}x: held-out {r['heldout_error']} (mean {r['heldout_mean']}, "
            f"pooled {r['heldout_pooled_mean']}), "
            f"unmeasured NMSE {r['unmeasured_nmse']}, PSNR {r['PSNR']}"
        )

    def run(label, kind, accel) -> dict:
        return run_cell(info, label, kind, accel, args, denoiser)

    run_cells(args, args.rows, run, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Posterior averaging: PSNR/SSIM of the mean of K = 1, 2, 4, 8 samples per method on `val` (issue 13).

One reconstruction with the largest of ``--ks`` samples per slice runs per (row, mask, acceleration);
the mean of its first k samples is scored for every k in ``--ks``. The K samples of a slice are
independent draws (one generator per slice, drawn in turn), so the mean of the first k of them has the
distribution of a K = k run's output; this costs one ``kmax`` run instead of runs at K = 1 + 2 + 4 + 8.

A row is a params-file label (``benchmarks/params/open-brain-128.yaml``) or a method name, with
optional ``name:key=value;key=value`` settings and ``@NFE``, e.g. ``dds:eta=0.85;cg_iters=5@50`` (the
DDS paper's settings: Chung, Lee & Ye, ICLR 2024).

Usage (val only; quiet machine for the seconds column)::

    python -m benchmarks.posterior_k --rows ccdf,dds,dds:eta=0.85;cg_iters=5@50 --masks random,poisson \
        --accels 4,8 --slices 6 --json runs/posterior_k.jsonl
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.config import DEFAULT_PARAMS, method_config, read_params
from benchmarks.tuning_common import (
    eval_slices,
    mask_spec,
    one_line_errors,
    run_cells,
    targets,
    val_parser,
    val_volume,
)
from mrdiff.metrics import volume_metrics
from mrdiff.overrides import yaml_value
from mrdiff.pipeline import MethodSpec, reconstruct_volume


@dataclass(frozen=True)
class Row:
    """A benchmark row: params-file label or method, extra parameters, optional NFE."""

    label: str
    base: str
    params: dict
    nfe: int | None


def parse_row(text: str) -> Row:
    """``name[:k=v;k=v][@NFE]`` -> :class:`Row`."""
    body, _, nfe = text.partition("@")
    base, _, settings = body.partition(":")
    params = {}
    for item in filter(None, settings.split(";")):
        key, _, value = item.partition("=")
        params[key.strip()] = yaml_value(value.strip(), item)
    return Row(text, base, params, int(nfe) if nfe else None)


def prefix_means(samples: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Magnitude of the mean of the first k samples, ``{k: (S, h, w)}``, from complex ``(S, K, h, w)``."""
    return {k: np.abs(samples[:, :k].mean(1)).astype(np.float32) for k in ks}


def run_cell(info, row: Row, table, kind, accel, args, denoiser) -> dict:
    """Scores of K = each of ``args.ks`` for one row on one mask."""
    cfg = method_config(row.base, table, row.nfe)
    params = {**cfg.params, **row.params}
    spec = MethodSpec(cfg.name, params, denoiser, cfg.nfe or 50, samples=max(args.ks), batch=args.batch)
    slices = eval_slices(info, args.slices)
    target = targets(info, slices)
    t0 = time.perf_counter()
    res = reconstruct_volume(info, spec, mask_spec(kind, accel), slices, keep_samples=True)
    seconds = (time.perf_counter() - t0) / len(slices)
    scores = {}
    # a classical method is deterministic: its one output stands for every K
    means = (
        prefix_means(res.samples, args.ks)
        if res.samples is not None
        else dict.fromkeys(args.ks, res.reconstruction)
    )
    for k, recon in means.items():
        m = volume_metrics(target, recon)
        scores[k] = {"PSNR": round(m["PSNR"], 3), "SSIM": round(m["SSIM"], 4)}
    return {
        "row": row.label,
        "method": cfg.name,
        "params": params,
        "nfe": res.nfe,
        "mask": kind,
        "accel": accel,
        "slices": slices,
        "kmax": max(args.ks),
        "seconds_per_slice_kmax": round(seconds, 2),
        "scores": scores,
    }


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Print one line per (row, mask, acceleration); append JSON records with ``--json``."""
    p = val_parser(__doc__, "random,poisson", "4,8")
    p.add_argument("--rows", default="ccdf,dds", help="comma-separated rows (see the module docstring)")
    p.add_argument("--slices", type=int, default=6, help="central val slices evaluated")
    p.add_argument("--ks", default="1,2,4,8", help="sample counts scored (the largest is run)")
    p.add_argument("--batch", type=int, default=1, help="slices per batch")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    args.ks = sorted(int(k) for k in args.ks.split(","))
    torch.set_num_threads(args.threads)
    from mrdiff.priors import load_prior

    info, table, denoiser = val_volume(args.data), read_params(DEFAULT_PARAMS), load_prior(None)

    def line(label, kind, accel, r) -> str:
        scores = "  ".join(f"K{k} {s['PSNR']:.2f}/{s['SSIM']:.3f}" for k, s in r["scores"].items())
        return f"{label:>28} {kind:>10} {accel:g}x  {scores}  ({r['seconds_per_slice_kmax']} s/slice)"

    def run(label, kind, accel) -> dict:
        return run_cell(info, parse_row(label), table, kind, accel, args, denoiser)

    run_cells(args, args.rows, run, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

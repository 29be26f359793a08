"""`mrdiff eval`: NMSE / PSNR / SSIM exactly as fastMRI's evaluate.py computes them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrdiff.errors import InputError
from mrdiff.io import TARGET_KEYS, list_volumes, read_reconstruction
from mrdiff.metrics import METRIC_NAMES, aggregate, volume_metrics
from recon.verbs import SUMMARIES

HELP = SUMMARIES["eval"]


def _read_target(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            key = next((k for k in TARGET_KEYS if k in f), None)
            if key is None:
                raise InputError(f"{path}: no target dataset ({' or '.join(TARGET_KEYS)})")
            return f[key][()]
    except OSError as err:
        raise InputError(f"{path}: not a readable HDF5 file ({err.__class__.__name__})") from None


def recorded_slices(path: Path) -> list[int] | None:
    """The slice subset a reconstruction was made from (``mrdiff recon --slices``), or None."""
    import h5py

    with h5py.File(path, "r") as f:
        value = f.attrs.get("slices")
    return None if value is None else [int(i) for i in json.loads(value)]


def pairs(target: Path, pred: Path) -> list[tuple[Path, Path]]:
    """(target file, prediction file) pairs; directories are matched by file name."""
    if target.is_dir():
        out = [(t, pred / t.name) for t in list_volumes(target)]
        missing = [str(p) for _, p in out if not p.exists()]
        if missing:
            raise InputError(f"{pred}: missing predictions for {len(missing)} target(s), e.g. {missing[0]}")
        return out
    return [(target, pred if not pred.is_dir() else pred / target.name)]


def main(argv: list[str]) -> int:
    """Entry point of `mrdiff eval`."""
    p = argparse.ArgumentParser(prog="mrdiff eval", description=HELP)
    p.add_argument("--target", type=Path, required=True, help="target file or directory (fastMRI layout)")
    p.add_argument("--pred", type=Path, required=True, help="reconstruction file or directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = p.parse_args(argv)
    rows = []
    for t, r in pairs(args.target, args.pred):
        target, recon = _read_target(t), read_reconstruction(r)
        subset = recorded_slices(r)
        if subset is not None:
            if max(subset, default=-1) >= target.shape[0]:
                raise InputError(f"{r}: slices {subset} do not exist in {t} ({target.shape[0]} slices)")
            target = target[subset]
        if target.shape[0] != recon.shape[0] or recon.shape[-1] < target.shape[-1]:
            raise InputError(f"{r}: reconstruction shape {recon.shape} does not match target {target.shape}")
        rows.append({"file": t.name, **volume_metrics(target, recon)})
    agg = aggregate(rows)
    if args.json:
        print(
            json.dumps(
                {
                    **{k: agg[k]["mean"] for k in METRIC_NAMES},
                    "2std": {k: agg[k]["2std"] for k in METRIC_NAMES},
                    "volumes": rows,
                }
            )
        )
    else:
        print(
            " ".join(f"{k} = {agg[k]['mean']:.4g} +/- {agg[k]['2std']:.4g}" for k in METRIC_NAMES)
            + f"  ({len(rows)} volumes)"
        )
    return 0

"""Helpers shared by the `val` benchmarks (``heldout_rank.py``, ``auto_vs_fixed.py``, ``posterior_k.py``,
...), and ``one_line_errors`` for every benchmark entry point."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.harness import center_fraction
from mrdiff.errors import InputError
from mrdiff.io import VolumeInfo, center_crop, list_volumes, open_volume, read_slice
from mrdiff.metrics import volume_metrics
from mrdiff.pipeline import MaskSpec, central_slices
from mrdiff.tuning import AUTO, CENTRE, COVER, OUTER, POINT_FOLDS


def one_line_errors(main):
    """Wrap a benchmark's ``main(argv)``: an :class:`InputError` (bad data path, the `test` split,
    nothing to hold out, ...) prints one line on stderr and returns 2 instead of a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except InputError as err:
            print(f"{Path(main.__code__.co_filename).stem}: error: {err}", file=sys.stderr)
            return 2

    return wrapped


def val_parser(doc: str, masks: str, accels: str) -> argparse.ArgumentParser:
    """A parser with the options every `val` cell benchmark shares: ``--data``, ``--masks``,
    ``--accels`` (defaults ``masks``, ``accels``) and ``--json``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/open-brain-128/val"), help="val split directory")
    p.add_argument("--masks", default=masks, help="comma-separated mask kinds")
    p.add_argument("--accels", default=accels, help="comma-separated accelerations")
    p.add_argument("--json", type=Path, default=None, help="append every record here (JSON lines)")
    return p


def add_folds_argument(p: argparse.ArgumentParser) -> None:
    """``--folds``: held-out folds, by default as ``--auto`` (:data:`mrdiff.tuning.AUTO`), and
    :func:`add_region_argument`."""
    p.add_argument(
        "--folds",
        type=int,
        default=AUTO,
        help=f"held-out folds (default {AUTO}: as --auto, every outer line of a line mask once, "
        f"{POINT_FOLDS} folds of a 2-D mask; {COVER}: every line/point once)",
    )
    add_region_argument(p)


def add_region_argument(p: argparse.ArgumentParser) -> None:
    """``--region``: where the held-out folds are drawn (``Split.region``)."""
    p.add_argument(
        "--region",
        choices=(OUTER, CENTRE),
        default=OUTER,
        help="held-out samples outside the fully sampled centre (default), or single centre lines",
    )


def val_volume(path) -> VolumeInfo:
    """The first volume under ``path``; refuses the `test` split (these scripts choose parameters)."""
    info = open_volume(list_volumes(path)[0])
    if info.attrs.get("split") == "test" or "test" in str(path).split("/"):
        raise InputError(f"{path}: tuning benchmarks run on `val`, never on `test`")
    if info.target_key is None:
        raise InputError(f"{info.path}: no ground truth; these benchmarks compare with it")
    return info


def mask_spec(kind: str, accel: float) -> MaskSpec:
    """The benchmark's mask for ``kind`` at ``accel`` (fastMRI centre fractions, as `mrdiff bench`)."""
    return MaskSpec(kind, float(accel), center_fraction(kind, accel))


def eval_slices(info: VolumeInfo, count: int) -> list[int]:
    """``count`` consecutive central slices."""
    return central_slices(list(range(info.shape[0])), count)


def targets(info: VolumeInfo, slices: list[int]) -> np.ndarray:
    """Ground-truth magnitudes ``(S, h, w)`` of ``slices``."""
    return np.stack([center_crop(read_slice(info, s).target.numpy(), info.recon_size) for s in slices])


def psnr(target: np.ndarray, recon: np.ndarray) -> float:
    """fastMRI volume PSNR over the given slices."""
    return volume_metrics(target, recon)["PSNR"]


def slice_nmse(target: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per-slice NMSE ``||t - r||^2 / ||t||^2`` ``(S,)``."""
    t, r = target.reshape(len(target), -1), recon.reshape(len(recon), -1)
    return ((t - r) ** 2).sum(1) / (t**2).sum(1)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


def cells(rows: str, masks: str, accels: str) -> list[tuple[str, str, float]]:
    """Every (row label, mask kind, acceleration) of comma-separated rows, masks and accelerations."""
    return [
        (label, kind, float(accel))
        for label in rows.split(",")
        for kind in masks.split(",")
        for accel in accels.split(",")
    ]


def run_cells(args, rows: str, run, line) -> None:
    """For every cell of ``rows`` x ``args.masks`` x ``args.accels`` (:func:`cells`): its record
    ``run(label, kind, accel)``, printed as ``line(label, kind, accel, record)`` and appended to
    ``args.json`` (when set)."""
    for label, kind, accel in cells(rows, args.masks, args.accels):
        record = run(label, kind, accel)
        print(line(label, kind, accel, record), flush=True)
        append_jsonl(args.json, record)


def append_jsonl(path: Path | None, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` (nothing when None)."""
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

"""fastMRI evaluation metrics, computed exactly as ``fastmri/evaluate.py`` does.

Per volume: both target and reconstruction are centre-cropped to ``(W, W)`` with ``W`` the target's
last dimension (``(H, W)`` when the target is wider than tall, where fastMRI's crop is undefined),
then NMSE, PSNR and SSIM come from ``fastmri.evaluate`` (per-volume maximum of the target as data
range; SSIM averaged over slices). Over volumes: mean and ``2 * stddev`` from
``runstats.Statistics``, as fastMRI's ``Metrics`` class reports them.
"""

from __future__ import annotations

import numpy as np
from fastmri.evaluate import METRIC_FUNCS
from runstats import Statistics

from mrdiff.io import center_crop

METRIC_NAMES = ("NMSE", "PSNR", "SSIM")


def crop_like_fastmri(target: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop both volumes ``(S, H, W)`` to ``(W_t, W_t)`` as ``evaluate.evaluate`` does; a target
    wider than tall (``H_t < W_t``) keeps its height, ``(H_t, W_t)``."""
    h, w = target.shape[-2:]
    size = (min(h, w), w)
    return center_crop(target, size), center_crop(recon, size)


def volume_metrics(target: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """NMSE, PSNR and SSIM of one volume ``(S, H, W)`` (float magnitudes), fastMRI conventions."""
    if target.ndim != 3 or recon.shape[0] != target.shape[0]:
        raise ValueError(f"target {target.shape} and reconstruction {recon.shape} do not match")
    t, r = crop_like_fastmri(np.asarray(target), np.asarray(recon))
    return {name: float(np.asarray(METRIC_FUNCS[name](t, r)).reshape(-1)[0]) for name in METRIC_NAMES}


def aggregate(per_volume: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and 2*stddev over volumes for each metric (``runstats.Statistics``, as fastMRI)."""
    out = {}
    for name in METRIC_NAMES:
        stats = Statistics()
        for row in per_volume:
            stats.push(row[name])
        std = stats.stddev() if len(stats) > 1 else 0.0
        out[name] = {"mean": float(stats.mean()), "2std": float(2 * std), "n": len(stats)}
    return out

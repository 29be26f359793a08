"""The one intensity scale shared by training and reconstruction."""

from __future__ import annotations

import torch

SCALE_QUANTILE = 0.99


def image_scale(x: torch.Tensor, q: float = SCALE_QUANTILE, eps: float = 1e-12) -> torch.Tensor:
    """Per-image scale: the ``q`` quantile of ``|x|`` over each image.

    Args:
        x: complex or real tensor ``(B, H, W)``.
        q: quantile in (0, 1].
        eps: lower bound of the returned scale (avoids division by zero on empty images).

    Returns:
        real tensor ``(B,)``; divide images by ``scale[:, None, None]`` to normalise.
    """
    if x.ndim != 3:
        raise ValueError(f"image_scale expects (B, H, W), got shape {tuple(x.shape)}")
    mag = x.abs().reshape(x.shape[0], -1).float()
    return torch.quantile(mag, q, dim=1).clamp_min(eps)

"""Supervised baselines: the fastMRI U-Net and E2E-VarNet behind the baseline signature.

* U-Net (Ronneberger et al., MICCAI 2015; the fastMRI baseline of Zbontar et al., arXiv:1811.08839):
  magnitude in, magnitude out. Input is the RSS of the zero-filled coil images, instance-normalised
  (mean/std, clamped to +-6) as fastMRI's ``UnetDataTransform`` does.
* E2E-VarNet (Sriram et al., MICCAI 2020): unrolled cascades on multi-coil k-space with learned
  sensitivity maps; its output magnitude is the RSS of the final coil images.

``fastmri.models`` use a ``[..., 2]`` real/imag layout; we convert at this boundary only. Both
networks predict a magnitude. To return the complex ``(B, H, W)`` image of the baseline contract
(needed by CCDF as an initialiser), the phase is taken from an estimate in the operator's own coil
convention: the low-resolution calibration image (U-Net) or the VarNet's final coil images combined
with ``op``'s maps (VarNet). Checkpoints hold tensors and plain types only (``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from mrdiff.checkpoints import load_torch, save_torch, sha256_file
from mrdiff.coils import calibration_width, rss
from mrdiff.errors import InputError
from mrdiff.fft import ifft2c
from mrdiff.io import center_crop
from mrdiff.operators import CartesianOperator
from mrdiff.resources import package_path

WEIGHTS_DIR = package_path("mrdiff", "weights")  # shipped weights are package data (mrdiff/weights)
DEFAULT_WEIGHTS = {"unet": "unet-brain128.pt", "varnet": "varnet-brain128.pt"}
#: small CPU presets (the fastMRI defaults are chans=32/pools=4 and 12 cascades of chans=18)
PRESETS = {
    "unet": {"chans": 16, "num_pool_layers": 3},
    "varnet": {"num_cascades": 4, "sens_chans": 4, "sens_pools": 3, "chans": 8, "pools": 3},
}
NORM_CLAMP = 6.0


def build_model(kind: str, config: dict | None = None) -> torch.nn.Module:
    """A fresh fastMRI ``Unet`` (1 -> 1 channels) or ``VarNet`` with ``config`` (default: the preset)."""
    from fastmri.models import Unet, VarNet  # imported here: fastmri.data loads pandas and requests

    if kind not in PRESETS:
        raise InputError(f"unknown supervised model '{kind}' (choose from {', '.join(PRESETS)})")
    cfg = dict(PRESETS[kind] if config is None else config)
    if kind == "unet":
        return Unet(in_chans=1, out_chans=1, drop_prob=0.0, **cfg)
    return VarNet(**cfg)


def _center_mask(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``y`` restricted to the centred fully sampled square (the calibration block)."""
    H, W = y.shape[-2:]
    side = max(1, calibration_width(mask, (H, W)))
    keep = torch.zeros(H, W, dtype=torch.bool, device=y.device)
    h0, w0 = H // 2 - side // 2, W // 2 - side // 2
    keep[h0 : h0 + side, w0 : w0 + side] = True
    return y * keep


def _with_phase(magnitude: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``magnitude * exp(i angle(reference))``, complex64 ``(B, H, W)``."""
    phase = torch.angle(reference.to(torch.complex64))
    return torch.polar(magnitude.float().clamp_min(0), phase)


def unet_magnitude(model: torch.nn.Module, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """fastMRI U-Net on masked k-space ``(B, C, H, W)``: float magnitude ``(B, H, W)``.

    Zbontar et al., arXiv:1811.08839, Sec. 5.1 (RSS of zero-filled coil images, instance norm).
    """
    zf = rss(ifft2c(y * mask.to(y.device)))
    mean = zf.mean(dim=(-2, -1), keepdim=True)
    std = zf.std(dim=(-2, -1), keepdim=True).clamp_min(1e-11)
    x = ((zf - mean) / std).clamp(-NORM_CLAMP, NORM_CLAMP)
    out = model(x[:, None].float())[:, 0]
    return out * std + mean


def _varnet_mask(mask: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Our ``(W,)`` / ``(H, W)`` mask in fastMRI's layout ``(1, 1, 1|H, W, 1)`` (bool)."""
    m = mask.bool()
    if m.ndim == 1 or (m.ndim == 2 and m.shape[0] == 1):
        return m.reshape(1, 1, 1, W, 1)
    return torch.broadcast_to(m.reshape(-1, W)[-H:], (H, W)).reshape(1, 1, H, W, 1)


def varnet_kspace(model: torch.nn.Module, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """E2E-VarNet cascades (Sriram et al., MICCAI 2020, Eq. 3-4): final coil k-space ``(B, C, H, W)``."""
    H, W = y.shape[-2:]
    m = _varnet_mask(mask.to(y.device), H, W)
    k = torch.view_as_real((y * mask.to(y.device)).to(torch.complex64))
    nlf = max(1, calibration_width(mask, (H, W)))
    maps = model.sens_net(k, m, nlf)
    pred = k.clone()
    for cascade in model.cascades:
        pred = cascade(pred, k, m, maps)
    return torch.view_as_complex(pred.contiguous())


def varnet_magnitude(model: torch.nn.Module, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """VarNet output magnitude: RSS of the final coil images, float ``(B, H, W)``."""
    return rss(ifft2c(varnet_kspace(model, y, mask)))


def _to_y(y: torch.Tensor) -> torch.Tensor:
    if y.ndim != 4 or not y.is_complex():
        raise InputError(
            f"supervised baseline: y must be complex (B, C, H, W), got {tuple(y.shape)} {y.dtype}"
        )
    return y.to(torch.complex64)


def save_checkpoint(
    path: str | Path, kind: str, model: torch.nn.Module, config: dict, extra: dict | None = None
) -> None:
    """Atomically write ``{kind, config, state_dict, **extra}`` (tensors and plain types only; an
    interrupted save leaves the previous file intact, see :func:`mrdiff.checkpoints.save_torch`)."""
    state = {"kind": kind, "config": dict(config), "state_dict": model.state_dict(), **(extra or {})}
    save_torch(state, path)


def load_model(kind: str, path: str | Path | None = None, device: str = "cpu") -> torch.nn.Module:
    """Load a U-Net/VarNet checkpoint with ``weights_only=True`` (default: the shipped weights)."""
    path = Path(path) if path else WEIGHTS_DIR / DEFAULT_WEIGHTS[kind]
    if not path.exists():
        raise InputError(f"{path}: no {kind} weights (train them with benchmarks/train_supervised.py)")
    ckpt = load_torch(path, device, what=f"{kind} checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a mrdiff {kind} checkpoint")
    model = build_model(kind, ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.sha256 = sha256_file(path)
    return model.to(device).eval()


_CACHE: dict[tuple[str, str, str], torch.nn.Module] = {}


def _cached(kind: str, weights: str | None, device: str) -> torch.nn.Module:
    key = (kind, str(weights or ""), device)
    if key not in _CACHE:
        _CACHE[key] = load_model(kind, weights, device)
    return _CACHE[key]


@torch.no_grad()
def unet(y: torch.Tensor, op: CartesianOperator, weights: str | None = None) -> torch.Tensor:
    """fastMRI U-Net baseline: ``(B, C, H, W)`` masked k-space -> complex ``(B, H, W)``.

    Magnitude from the network, phase from the calibration-region image combined by ``op``.
    """
    y = _to_y(y)
    model = _cached("unet", weights, str(y.device))
    mag = unet_magnitude(model, y, op.mask)
    return _with_phase(mag, op.combine(ifft2c(_center_mask(y, op.mask))))


@torch.no_grad()
def varnet(y: torch.Tensor, op: CartesianOperator, weights: str | None = None) -> torch.Tensor:
    """E2E-VarNet baseline: ``(B, C, H, W)`` masked k-space -> complex ``(B, H, W)``.

    Magnitude = RSS of the predicted coil images; phase from the same images combined by ``op``.
    """
    y = _to_y(y)
    model = _cached("varnet", weights, str(y.device))
    k = varnet_kspace(model, y, op.mask)
    return _with_phase(rss(ifft2c(k)), op.combine(ifft2c(k)))


def training_loss(
    kind: str, model: torch.nn.Module, kspace: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """L1 loss between predicted and target magnitudes, each divided by the target's maximum.

    Args:
        kind: ``unet`` or ``varnet``.
        model: the network.
        kspace: fully sampled k-space ``(B, C, H, W)`` (masked here).
        mask: bool mask broadcastable to ``(H, W)``.
        target: RSS target ``(B, h, w)`` (the output is centre-cropped to it).

    Returns:
        scalar loss.
    """
    y = kspace * mask
    fn = unet_magnitude if kind == "unet" else varnet_magnitude
    out = fn(model, y, mask)
    out = center_crop(out, target.shape[-2:])
    scale = target.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    return ((out - target).abs() / scale).mean()


SUPERVISED: dict[str, Callable[..., torch.Tensor]] = {"unet": unet, "varnet": varnet}

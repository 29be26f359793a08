"""Diffusion priors: the U-Net denoiser with EDM preconditioning and its loader (contract 2).

``load_prior(None)`` loads the shipped default ``mrdiff/weights/brain-patch.pt`` (package data), without any
network access; ``load_prior(path)`` loads a shipped prior or a training checkpoint (its EMA weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrdiff.config import from_dict, to_dict
from mrdiff.errors import InputError
from mrdiff.priors.checkpoint import load_checkpoint, load_weights, scale_calibration, sha256_file
from mrdiff.priors.patch import PatchDenoiser
from mrdiff.priors.precond import Denoiser, EDMPrecond
from mrdiff.resources import package_path

DEFAULT_PRIOR = "brain-patch"  # chosen on val over brain128-cpu (mrdiff/weights/brain-patch.md)


def default_prior_path() -> Path:
    """Path of the shipped default prior (``mrdiff/weights/brain-patch.pt``, package data found with
    :mod:`importlib.resources`, so it works from a checkout and from an installed wheel)."""
    return package_path("mrdiff", "weights", f"{DEFAULT_PRIOR}.pt")


def wrap_model(model: EDMPrecond, config: dict) -> Denoiser:
    """``model`` (real channels) as the complex-image denoiser of its family: :class:`Denoiser` for a
    whole-image prior, :class:`PatchDenoiser` (tiling) for ``model.family == "patch"``."""
    family = PatchDenoiser if config["model"]["family"] == "patch" else Denoiser
    return family(model, config)


def build_denoiser(config: dict) -> Denoiser:
    """A randomly initialised denoiser for a plain config dict (see :func:`wrap_model`)."""
    cfg = from_dict(config)
    return wrap_model(EDMPrecond(cfg.model), to_dict(cfg))


def load_prior(path: str | Path | None = None, device: str | torch.device = "cpu") -> Denoiser:
    """Load a prior as a frozen, eval-mode :class:`Denoiser` on ``device``.

    Args:
        path: a prior file or a training checkpoint; None loads the shipped default.
        device: where the weights go.

    Returns:
        Denoiser with ``sha256``, ``sigma_min``, ``sigma_max``, ``config``, ``scale_calibration``
        (from the prior's ``meta``, see :func:`~mrdiff.priors.checkpoint.scale_calibration`) and
        ``source`` (the file's path) set.
    """
    path = default_prior_path() if path is None else Path(path)
    if not path.exists() and path == default_prior_path():
        raise InputError(
            f"the shipped prior {path} is missing; pass --prior or reinstall mrdiff (mrdiff/weights/)"
        )
    state = load_checkpoint(path)
    if "ema" not in state:
        raise InputError(f"checkpoint {path} holds no EMA weights")
    denoiser = build_denoiser(state["config"])
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["ema"].items()}
    load_weights(denoiser.model, weights, path)  # fp16-stored priors are computed in fp32
    denoiser.sha256 = sha256_file(path)
    denoiser.scale_calibration = scale_calibration(state, path)
    denoiser.source = str(path)
    denoiser.eval().requires_grad_(False)
    return denoiser.to(device)


__all__ = [
    "DEFAULT_PRIOR",
    "Denoiser",
    "EDMPrecond",
    "PatchDenoiser",
    "build_denoiser",
    "default_prior_path",
    "load_prior",
    "wrap_model",
]

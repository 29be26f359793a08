"""Autoguidance: steer a prior away from the errors of a weaker version of itself.

Karras, Aittala, Kynkäänniemi, Lehtinen, Aila & Laine, "Guiding a diffusion model with a bad version
of itself", NeurIPS 2024, Eq. 2: ``D_w(x; sigma) = D_0(x; sigma) + w [D_1(x; sigma) - D_0(x; sigma)]``
with ``D_1`` the prior and ``D_0`` a worse model of the same data (smaller and/or trained for
shorter: an earlier checkpoint of the same run). Unlike classifier-free guidance it needs no
conditioning, so it applies to unconditional priors. Guidance is limited to a noise interval
(Kynkäänniemi et al., "Applying guidance in a limited interval improves sample and distribution
quality in diffusion models", NeurIPS 2024): at low sigma it only sharpens noise.
"""

from __future__ import annotations

import torch
from torch import nn

from mrdiff.errors import InputError

#: what a wrapper of a loaded prior (autoguidance here, LoRA adaptation in ``lora.py``) takes over
PRIOR_ATTRIBUTES = (
    "config",
    "sha256",
    "in_channels",
    "sigma_min",
    "sigma_max",
    "resolution",
    "scale_calibration",
)


class AutoGuided(nn.Module):
    """A denoiser (contract 2) ``D_0 + w (D_1 - D_0)`` for sigma in ``[sigma_lo, sigma_hi]``, else ``D_1``.

    Args:
        prior: the main denoiser ``D_1`` (its attributes are the guided denoiser's).
        guide: the weaker denoiser ``D_0``; same channels as ``prior``.
        weight: guidance weight ``w`` (1 = the prior alone; the paper uses about 2-3).
        sigma_lo, sigma_hi: noise interval (per real component) where guidance applies.
    """

    def __init__(self, prior: nn.Module, guide: nn.Module, weight: float, sigma_lo: float, sigma_hi: float):
        super().__init__()
        if prior.in_channels != guide.in_channels:
            raise InputError(
                f"the guide has {guide.in_channels} input channels, the prior {prior.in_channels}"
            )
        if weight < 1 or not 0 <= sigma_lo < sigma_hi:
            raise InputError("autoguidance needs weight >= 1 and 0 <= sigma_lo < sigma_hi")
        self.prior, self.guide = prior, guide
        self.weight, self.sigma_lo, self.sigma_hi = float(weight), float(sigma_lo), float(sigma_hi)
        for name in PRIOR_ATTRIBUTES:
            setattr(self, name, getattr(prior, name))
        self.draws_noise = getattr(prior, "draws_noise", False) or getattr(guide, "draws_noise", False)

    @property
    def device(self) -> torch.device:
        """Device of the prior's weights."""
        return self.prior.device

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, generators=None) -> torch.Tensor:
        """Guided estimate of x0 for complex ``(B, H, W)`` ``x`` and sigma ``(B,)`` or scalar
        (``generators`` go to whichever of the two draws noise of its own)."""
        d1 = self._call(self.prior, x, sigma, generators)
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        inside = (s >= self.sigma_lo) & (s <= self.sigma_hi)
        if self.weight == 1 or not bool(inside.any()):
            return d1
        d0 = self._call(self.guide, x, sigma, generators)
        guided = d0 + self.weight * (d1 - d0)
        return torch.where(inside[:, None, None], guided, d1)

    @staticmethod
    def _call(denoiser: nn.Module, x: torch.Tensor, sigma, generators):
        """``denoiser(x, sigma)``, with the generators if it draws noise of its own."""
        if getattr(denoiser, "draws_noise", False):
            return denoiser(x, sigma, generators=generators)
        return denoiser(x, sigma)

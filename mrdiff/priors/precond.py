"""EDM preconditioning and the complex-image denoiser that samplers see (contract 2).

``EDMPrecond`` works on real channels: ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``
(Karras et al. 2022, Eq. 7 and Table 1). ``Denoiser`` wraps it for complex ``(B, H, W)`` images:
real/imag (or magnitude) channels at the boundary, zero padding to the network's multiple and
cropping back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mrdiff.config import ModelConfig
from mrdiff.priors.checkpoint import DEFAULT_SCALE_CALIBRATION
from mrdiff.priors.unet import UNet


class EDMPrecond(nn.Module):
    """Karras et al. 2022, Table 1 (EDM column): preconditioned denoiser on real channels.

    Args:
        cfg: model configuration (``sigma_data`` and the U-Net shape).

    Shapes: x (B, C, H, W) float, sigma (B,) float; returns (B, C, H, W) float32.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.sigma_data = float(cfg.sigma_data)
        self.net = UNet(cfg)
        self.multiple = self.net.multiple
        self.patch = cfg.family == "patch"

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """EDM Eq. 7: ``c_skip x + c_out F(c_in x, ln(sigma)/4)`` with fp32 coefficients.

        A patch prior (``model.family == "patch"``) also takes the coordinate channels ``pos``
        (B, 2, H, W) of every pixel, appended to the network input unscaled (Hu et al., "Learning
        image priors through patch-based diffusion models", NeurIPS 2024).
        """
        if (pos is None) == self.patch:
            raise ValueError("a patch prior needs coordinate channels (pos); a whole-image prior takes none")
        x = x.float()
        s = sigma.float().reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1.0 / (s**2 + sd2).sqrt()
        c_noise = sigma.float().log().flatten() / 4.0
        inp = c_in * x if pos is None else torch.cat([c_in * x, pos.to(x.dtype)], dim=1)
        f = self.net(inp, c_noise)
        return c_skip * x + c_out * f.float()


def complex_to_channels(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(B, H, W) complex -> (B, 2, H, W) real/imag, or (B, 1, H, W) real part when magnitude-only.

    The one complex-to-channel conversion (training data use it too, via ``mrdiff.data.to_channels``).
    """
    if in_channels == 1:
        return x.real.float()[:, None]
    return torch.stack([x.real, x.imag], dim=1).float()


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) or (B, 1, H, W) real -> (B, H, W) complex64."""
    if x.shape[1] == 1:
        return torch.complex(x[:, 0], torch.zeros_like(x[:, 0]))
    return torch.complex(x[:, 0].float(), x[:, 1].float())


class Denoiser(nn.Module):
    """``D(x, sigma) -> x0_hat`` on complex images of any size (contract 2).

    A magnitude-only prior (``in_channels == 1``) denoises the real part of ``x`` and returns a real
    image (zero imaginary part); it is meant for real, non-negative images.

    Attributes:
        config: the full training configuration as a plain dict.
        sha256: hex digest of the weights file it was loaded from ("" when built in memory).
        sigma_min, sigma_max: noise range the prior was trained for (per real component).
        scale_calibration: factor from a CG-SENSE image's scale to the scale the prior was trained
            on (``mrdiff.reconstruct.estimate_scale``); :func:`~mrdiff.priors.load_prior` reads it
            from the file's ``meta``, in memory it is the documented default.
    """

    def __init__(self, model: EDMPrecond, config: dict, sha256: str = ""):
        super().__init__()
        self.model = model
        self.config = config
        self.sha256 = sha256
        self.in_channels = int(config["model"]["in_channels"])
        self.sigma_min = float(config["model"]["sigma_min"])
        self.sigma_max = float(config["model"]["sigma_max"])
        self.resolution = int(config["data"]["resolution"])
        self.scale_calibration = DEFAULT_SCALE_CALIBRATION

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.model.parameters()).device

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Denoise.

        Args:
            x: complex (B, H, W) noisy images, ``x = x0 + sigma * (randn + 1j * randn)``.
            sigma: (B,) noise std per real component (a float or 0-d tensor is broadcast).
            generators: one per item, for denoisers that draw randomness (a patch prior's tile
                offsets); a whole-image prior ignores them.

        Returns:
            complex64 (B, H, W) estimate of x0.
        """
        if x.ndim != 3 or not x.is_complex():
            raise ValueError(f"Denoiser expects complex (B, H, W) images, got {tuple(x.shape)} {x.dtype}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        xc = complex_to_channels(x.to(torch.complex64), self.in_channels)
        return channels_to_complex(self.denoise_channels(xc, sigma, generators))

    def denoise_channels(
        self, xc: torch.Tensor, sigma: torch.Tensor, generators: Sequence[torch.Generator] | None
    ) -> torch.Tensor:
        """Real-channel denoising ``(B, C, H, W) -> (B, C, H, W)``: zero-pad to the network's multiple,
        run it once on the whole image, crop back."""
        h, w = xc.shape[-2:]
        m = self.model.multiple
        ph, pw = (-h) % m, (-w) % m
        top, left = ph // 2, pw // 2
        xc = nn.functional.pad(xc, (left, pw - left, top, ph - top))
        return self.model(xc, sigma)[..., top : top + h, left : left + w]

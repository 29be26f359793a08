"""Denoising score-matching losses, as pure functions of (denoiser, x0, generator)."""

from __future__ import annotations

from collections.abc import Callable

import torch

RealDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_training_sigma(
    batch: int, generator: torch.Generator, p_mean: float, p_std: float, device: torch.device | str
) -> torch.Tensor:
    """Karras et al. 2022, Sec. 5: ln(sigma) ~ N(p_mean, p_std^2). Returns (batch,) float32."""
    z = torch.randn(batch, generator=generator, device=device)
    return (z * p_std + p_mean).exp()


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """Karras et al. 2022, Table 1: lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def denoising_error(denoiser: RealDenoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor):
    """Per-image mean squared error of ``D(x0 + sigma * noise, sigma)`` against ``x0``.

    Args:
        denoiser: real-channel denoiser ``(B, C, H, W), (B,) -> (B, C, H, W)``.
        x0: clean images (B, C, H, W).
        sigma: (B,) noise std per real component.
        noise: standard normal (B, C, H, W).

    Returns:
        (B,) mean squared error per image.
    """
    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    return (denoiser(x, sigma).float() - x0).square().flatten(1).mean(dim=1)


def edm_loss(
    denoiser: RealDenoiser,
    x0: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma_data: float,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """Karras et al. 2022, Eq. 8 with Table 1 weighting: E lambda(sigma) ||D(x0 + n, sigma) - x0||^2.

    Args:
        denoiser: real-channel denoiser ``(B, C, H, W), (B,) -> (B, C, H, W)``.
        x0: clean normalised images (B, C, H, W) on the generator's device.
        generator: source of sigma and noise.
        sigma_data: EDM sigma_data of the preconditioning.
        p_mean, p_std: log-normal training noise distribution.

    Returns:
        (B,) weighted loss per image (average it for the training objective).
    """
    sigma = sample_training_sigma(x0.shape[0], generator, p_mean, p_std, x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return edm_weight(sigma, sigma_data) * denoising_error(denoiser, x0, sigma, noise)

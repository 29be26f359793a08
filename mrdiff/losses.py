"""Denoising score-matching losses, as pure functions of (denoiser, x0, generator)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

RealDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator]


def standard_normal(
    shape: tuple[int, ...], generator: Generators, device, dtype=torch.float32
) -> torch.Tensor:
    """Standard normal ``shape`` ``(B, ...)``: all from one generator, or item b from ``generator[b]``
    (so an item's draw does not depend on which other items share its batch or process)."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"need one generator per item: {len(generator)} for {shape[0]}")
    runs = [(g, len(list(group))) for g, group in itertools.groupby(generator, key=id)]
    gens = {id(g): g for g in generator}  # consecutive items sharing one generator draw in one call
    return torch.cat(
        [torch.randn((n, *shape[1:]), generator=gens[k], device=device, dtype=dtype) for k, n in runs]
    )


def sample_training_sigma(
    batch: int, generator: Generators, p_mean: float, p_std: float, device: torch.device | str
) -> torch.Tensor:
    """Karras et al. 2022, Sec. 5: ln(sigma) ~ N(p_mean, p_std^2). Returns (batch,) float32."""
    z = standard_normal((batch,), generator, device)
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
    generator: Generators,
    *,
    sigma_data: float,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> torch.Tensor:
    """Karras et al. 2022, Eq. 8 with Table 1 weighting: E lambda(sigma) ||D(x0 + n, sigma) - x0||^2.

    Args:
        denoiser: real-channel denoiser ``(B, C, H, W), (B,) -> (B, C, H, W)``.
        x0: clean normalised images (B, C, H, W) on the generator's device.
        generator: source of sigma and noise: one generator, or one per image (each image then draws
            its sigma, then its noise, from its own generator).
        sigma_data: EDM sigma_data of the preconditioning.
        p_mean, p_std: log-normal training noise distribution.

    Returns:
        (B,) weighted loss per image (average it for the training objective).
    """
    sigma = sample_training_sigma(x0.shape[0], generator, p_mean, p_std, x0.device)
    noise = standard_normal(tuple(x0.shape), generator, x0.device, x0.dtype)
    return edm_weight(sigma, sigma_data) * denoising_error(denoiser, x0, sigma, noise)

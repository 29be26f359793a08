"""Noise schedules as data: 1-D float64 tensors of sigmas (per real component), descending, ending in 0.

A schedule is read pairwise: each pair ``(sigma, sigma_next)`` with ``sigma_next < sigma`` is one
denoising step (one or two denoiser calls); a pair with ``sigma_next > sigma`` is a re-noising jump
(RePaint), which costs no denoiser call. Variance-preserving (VP) schedules are converted to the
variance-exploding (VE) form the samplers use, ``sigma = sqrt((1 - abar) / abar)``.
"""

from __future__ import annotations

import math

import torch

VP_STEPS = 1000
SCHEDULES = ("karras", "vp-linear", "vp-cosine")  # the names :func:`make` knows


def karras(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), Eq. 5: ``n`` sigmas from ``sigma_max`` to ``sigma_min``, then 0.

    Args:
        n: number of steps (>= 1); the result has ``n + 1`` entries.
        sigma_min: last non-zero sigma.
        sigma_max: first sigma.
        rho: warping exponent (7 in EDM).

    Returns:
        float64 ``(n + 1,)`` descending, ending in 0.
    """
    _check_steps(n)
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if n == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def vp_alpha_bar(kind: str = "linear", T: int = VP_STEPS) -> torch.Tensor:
    """Cumulative products ``abar_t`` of a DDPM schedule, ``(T,)`` float64.

    ``linear``: Ho et al. 2020, betas linear in [1e-4, 0.02]. ``cosine``: Nichol & Dhariwal 2021,
    Eq. 17 with s = 0.008 and betas clipped at 0.999.
    """
    if kind == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif kind == "cosine":
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unknown VP schedule '{kind}' (choose linear or cosine)")
    return torch.cumprod(1 - betas, dim=0)


def vp_sigmas(
    n: int, kind: str = "linear", T: int = VP_STEPS, sigma_max: float | None = None
) -> torch.Tensor:
    """DDIM's uniform sub-sequence of a VP schedule in VE form (Song et al. 2021a, Sec. 4.2).

    Args:
        n: number of steps; timesteps ``round(linspace(T - 1, 0, n))``.
        kind: ``linear`` or ``cosine``.
        T: number of VP steps.
        sigma_max: clamp the largest sigmas to this value (duplicates removed), e.g. the range the
            prior was trained on.

    Returns:
        float64 descending ``sqrt((1 - abar) / abar)`` at those timesteps, then 0.
    """
    _check_steps(n)
    abar = vp_alpha_bar(kind, T)
    t = torch.linspace(T - 1, 0, n, dtype=torch.float64).round().long()
    sigmas = ((1 - abar[t]) / abar[t]).sqrt()
    if sigma_max is not None:
        sigmas = torch.unique_consecutive(sigmas.clamp(max=sigma_max))
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def make(kind: str, n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """A schedule by name (one of :data:`SCHEDULES`): ``karras`` (EDM), or ``vp-linear`` / ``vp-cosine``
    (clamped to sigma_max)."""
    if kind == "karras":
        return karras(n, sigma_min, sigma_max, rho)
    if kind in ("vp-linear", "vp-cosine"):
        return vp_sigmas(n, kind[3:], sigma_max=sigma_max)
    raise ValueError(f"unknown schedule '{kind}' (choose {', '.join(SCHEDULES)})")


def truncate(sigmas: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """CCDF truncation (Chung et al. 2022, Sec. 3): start at ``sigma_start`` and keep the lower tail.

    Args:
        sigmas: a descending schedule ending in 0.
        sigma_start: starting noise level ``sigma_t0`` (> 0).

    Returns:
        ``[sigma_start, s_k, s_k+1, ..., 0]`` with every kept ``s`` below ``sigma_start``.
    """
    if sigma_start <= 0:
        raise ValueError(f"sigma_start must be > 0, got {sigma_start}")
    tail = sigmas[sigmas < sigma_start]
    return torch.cat([sigmas.new_tensor([sigma_start]), tail])


def repaint(sigmas: torch.Tensor, jump_length: int = 10, resample: int = 10) -> torch.Tensor:
    """RePaint jump schedule (Lugmayr et al. 2022, Alg. 1 and Sec. 4.2).

    Walks down the base schedule; after every ``jump_length`` descending steps (except at the
    end) it jumps back up ``jump_length`` steps and walks down again, ``resample - 1`` times.

    Args:
        sigmas: base descending schedule ending in 0, ``(n + 1,)``.
        jump_length: steps per jump.
        resample: how often each stretch is traversed (1 = no jumps).

    Returns:
        float64 sequence of sigmas; a rise means "re-noise", ending in 0.
    """
    if jump_length < 1 or resample < 1:
        raise ValueError(f"jump_length and resample must be >= 1, got {jump_length}, {resample}")
    n = sigmas.numel() - 1
    path, i = [0], 0
    jumps = {k: resample - 1 for k in range(jump_length, n, jump_length)}
    while i < n:
        i += 1
        path.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump_length):
                i -= 1
                path.append(i)
    return sigmas[torch.tensor(path)]


def denoising_steps(sigmas: torch.Tensor) -> int:
    """Number of descending pairs in a schedule (each costs one denoiser call for first-order steps)."""
    return int((sigmas[1:] < sigmas[:-1]).sum())


def steps_for_nfe(nfe: int, sampler: str) -> int:
    """Steps that fit an NFE budget: Heun costs 2 calls per step except the last (EDM Alg. 2)."""
    _check_steps(nfe)
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def _check_steps(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"number of steps must be a positive integer, got {n}")

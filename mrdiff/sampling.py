"""Prior reverse steps (DDPM ancestral, DDIM with eta, Heun) and the ONE reverse loop.

Everything is in VE form, ``x = x0 + sigma * (randn + 1j * randn)`` with sigma per real component,
and every model is used as a denoiser ``D(x, sigma) -> x0_hat`` (Karras et al. 2022). The loop walks a
schedule pairwise; for each fall it calls the denoiser (with autograd only when the method needs it),
takes the prior step and hands a :class:`Step` to the measurement-consistency method; a rise
re-noises (RePaint). Noise is drawn per batch item from that item's own generator, so a result does
not depend on how items are batched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mrdiff.noise import complex_randn
from mrdiff.schedules import karras

SAMPLERS = ("ancestral", "ddim", "heun")


@dataclass(frozen=True)
class Step:
    """One reverse step handed to a consistency method.

    Attributes:
        index: position in the schedule.
        x: current state ``(B, H, W)`` (a leaf requiring grad when the method needs it).
        sigma: current noise level.
        sigma_next: target noise level (0 on the last step).
        x0_hat: denoiser output ``D(x, sigma)`` (attached to ``x``'s graph when grad is on).
        x_next: the prior's proposal at ``sigma_next``.
        eps: the noise direction ``(x - x0_hat) / sigma``.
    """

    index: int
    x: torch.Tensor
    sigma: float
    sigma_next: float
    x0_hat: torch.Tensor
    x_next: torch.Tensor
    eps: torch.Tensor

    @property
    def last(self) -> bool:
        """True on the final step (``sigma_next == 0``)."""
        return self.sigma_next == 0.0

    def with_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """The prior proposal re-taken from a corrected ``x0``, keeping the predicted noise ``eps`` and the
        fresh noise: ``x_next + (x0 - x0_hat)`` (DDIM's ``x0 + sigma_down eps + sigma_up z``; the Euler
        part of Heun is ``x0 + sigma_next eps``). On the last step this is ``x0`` itself."""
        return self.x_next + (x0 - self.x0_hat)


def batch_noise(like: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Complex unit noise (per real component) shaped like ``like`` ``(B, ...)``, item b from generator b."""
    if len(generators) != like.shape[0]:
        raise ValueError(f"need one generator per batch item: {len(generators)} for batch {like.shape[0]}")
    draws = [complex_randn(tuple(like.shape[1:]), g, dtype=like.dtype) for g in generators]
    return torch.stack(draws).to(like.device)


def denoise(
    denoiser: Callable,
    x: torch.Tensor,
    sigma: float,
    autocast: bool = True,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Call ``denoiser(x, sigma (B,))``; bf16 autocast on CUDA when ``autocast``; result in ``x.dtype``.

    ``generators`` (one per item) are passed on as ``denoiser(x, s, generators=...)`` to a denoiser
    that draws randomness of its own (``draws_noise``, e.g. a patch prior's tile offsets).
    """
    s = torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast and x.is_cuda else contextlib.nullcontext()
    kwargs = {"generators": generators} if getattr(denoiser, "draws_noise", False) else {}
    with ctx:
        out = denoiser(x.to(torch.complex64), s, **kwargs)
    return out.to(x.dtype)


def ddim_coefficients(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """DDIM (Song et al., ICLR 2021, Eq. 12-16) in VE form: ``(sigma_down, sigma_up)``.

    ``x_next = x0_hat + sigma_down * eps + sigma_up * z``; eta = 1 is DDPM ancestral (Ho et al. 2020,
    Eq. 6-7: posterior variance ``sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2``), eta = 0 is
    deterministic.
    """
    var_up = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
    sigma_up = min(eta * math.sqrt(max(var_up, 0.0)), sigma_next)
    return math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0)), sigma_up


def ddim_step(x, x0_hat, sigma, sigma_next, eta, generators) -> torch.Tensor:
    """Song et al., ICLR 2021, Eq. 12 (VE form): one DDIM step ``x0_hat + sigma_down eps + sigma_up z``."""
    sigma_down, sigma_up = ddim_coefficients(sigma, sigma_next, eta)
    eps = (x - x0_hat) / sigma
    x_next = x0_hat + sigma_down * eps
    if sigma_up > 0:
        x_next = x_next + sigma_up * batch_noise(x, generators)
    return x_next


def heun_step(x, x0_hat, sigma, sigma_next, d_fn) -> tuple[torch.Tensor, int]:
    """Karras et al. 2022, Alg. 2 (S_churn = 0): Euler predictor, trapezoidal corrector.

    Returns ``(x_next, extra denoiser calls)``.
    """
    d = (x - x0_hat) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_euler, 0
    d2 = (x_euler - d_fn(x_euler, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * 0.5 * (d + d2), 1


def prior_step(
    denoiser: Callable,
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    generators: Sequence[torch.Generator],
    index: int = 0,
    sampler: str = "ancestral",
    eta: float = 1.0,
    autocast: bool = True,
) -> tuple[Step, int]:
    """Denoise ``x`` and take one prior step ``sigma -> sigma_next`` (< sigma); returns ``(step, calls)``."""
    d_fn = lambda z, s: denoise(denoiser, z, s, autocast, generators)  # noqa: E731
    x0_hat = d_fn(x, sigma)
    calls = 1
    if sampler == "heun":
        x_next, extra = heun_step(x, x0_hat, sigma, sigma_next, d_fn)
        calls += extra
    elif sampler in ("ddim", "ancestral"):
        x_next = ddim_step(x, x0_hat, sigma, sigma_next, 1.0 if sampler == "ancestral" else eta, generators)
    else:
        raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
    eps = (x - x0_hat) / sigma
    return Step(index, x, sigma, sigma_next, x0_hat, x_next, eps), calls


def reverse_loop(
    denoiser: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    method,
    y: torch.Tensor,
    op,
    generators: Sequence[torch.Generator],
    callback: Callable[[Step, torch.Tensor], None] | None = None,
    autocast: bool = True,
) -> tuple[torch.Tensor, int]:
    """The one reverse loop shared by every consistency method.

    Args:
        denoiser: ``D(x, sigma) -> x0_hat``.
        x: start state ``(B, H, W)`` at ``sigmas[0]``.
        sigmas: schedule (float64, ends in 0; rises re-noise).
        method: consistency method with ``needs_grad``, ``sampler``, ``eta`` and
            ``__call__(step, y, op, generators) -> x_next``.
        y: measured k-space ``(B, C, H, W)`` on the scale of ``x``.
        op: forward operator.
        generators: one per batch item.
        callback: called as ``callback(step, x_next)`` after each reverse step.
        autocast: bf16 autocast of the denoiser on CUDA.

    Returns:
        ``(x, nfe)``: final state ``(B, H, W)`` and the number of denoiser calls.
    """
    nfe = 0
    levels = [float(s) for s in sigmas]
    for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
        if sigma_next > sigma:
            x = x + math.sqrt(sigma_next**2 - sigma**2) * batch_noise(x, generators)
            continue
        with torch.enable_grad() if method.needs_grad else torch.no_grad():
            xin = x.detach().requires_grad_(method.needs_grad)
            step, calls = prior_step(
                denoiser, xin, sigma, sigma_next, generators, i, method.sampler, method.eta, autocast
            )
            x = method(step, y, op, generators).detach()
        nfe += calls
        if callback is not None:
            callback(step, x)
    return x, nfe


class Unconditional:
    """The prior's own reverse process as a method of the one loop: no data term, ``x_next`` as proposed
    (Karras et al. 2022, Alg. 1-2 with the Heun step; DDPM/DDIM with the others)."""

    needs_grad = False

    def __init__(self, sampler: str = "heun", eta: float = 1.0) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
        self.sampler, self.eta = sampler, eta

    def __call__(self, step: Step, y, op, generators) -> torch.Tensor:
        """The prior's proposal ``step.x_next`` unchanged (``y``, ``op`` and ``generators`` are unused)."""
        return step.x_next


def sample_prior(
    denoiser: Callable,
    shape: tuple[int, int],
    steps: int,
    generators: Sequence[torch.Generator],
    sampler: str = "heun",
    sigma_max: float = 80.0,
    autocast: bool = True,
) -> torch.Tensor:
    """Unconditional samples of a prior with the one reverse loop (:class:`Unconditional`).

    Args:
        denoiser: ``D(x, sigma) -> x0_hat`` with ``sigma_min`` / ``sigma_max`` attributes.
        shape: image size ``(H, W)``.
        steps: Karras steps from ``min(sigma_max, denoiser.sigma_max)`` down to ``denoiser.sigma_min``
            (Heun costs two denoiser calls per step but the last).
        generators: one per sample; sample b starts at ``sigma * (randn + 1j randn)`` from generator b
            and draws all its noise from it.
        sampler: prior step, one of :data:`SAMPLERS`.
        sigma_max: upper limit of the starting noise level.
        autocast: bf16 autocast of the denoiser on CUDA.

    Returns:
        complex64 ``(len(generators), H, W)`` on the generators' device.
    """
    sigmas = karras(steps, float(denoiser.sigma_min), min(sigma_max, float(denoiser.sigma_max)))
    like = torch.zeros(len(generators), *shape, dtype=torch.complex64, device=generators[0].device)
    x = batch_noise(like, generators) * float(sigmas[0])
    method = Unconditional(sampler)
    x, _ = reverse_loop(denoiser, x, sigmas, method, None, None, generators, autocast=autocast)
    return x

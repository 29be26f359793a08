"""Shared machinery of the measurement-consistency methods (one method per module).

A method's parameters are immutable after construction (it only memoises the noise estimate of the
measurement it is given, :meth:`Consistency.measurement_noise`). The loop
(``mrdiff.sampling.reverse_loop``) reads ``needs_grad``, ``sampler`` and ``eta``; ``schedule`` maps an
NFE budget to sigmas; ``prepare`` gives the start point (and may change the schedule, e.g. CCDF's
truncation); ``__call__`` turns a prior :class:`~mrdiff.sampling.Step` into the corrected next state.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch

from mrdiff.errors import InputError
from mrdiff.noise import kspace_noise_sigma
from mrdiff.sampling import SAMPLERS, Step, batch_noise
from mrdiff.schedules import SCHEDULES, make, steps_for_nfe

BASE_DEFAULTS = {"sampler": "ancestral", "eta": 1.0, "schedule": "karras", "rho": 7.0}
#: ``noise``: the measurement noise the data step accounts for, as a multiple of the noise estimated
#: from the outermost measured k-space (0: measurements treated as noiseless); methods that impose data
#: take it
NOISE_DEFAULTS = {"noise": 0.0}


def _coerce(name: str, value, default):
    """Convert a command-line string (or number) to the type of the default."""
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        return type(default)(value)
    except (TypeError, ValueError):
        raise InputError(f"parameter '{name}': cannot read {value!r} as {type(default).__name__}") from None


class Consistency:
    """Base class: parameters, NFE -> schedule, noise start, and k-space helpers."""

    needs_grad: bool = False
    needs_init: bool = False
    defaults: dict = {}
    # parameters held-out k-space cross-validation may search, {name: (lo, hi, scale)} (mrdiff.tuning)
    tunable: dict = {}
    # NFE used when the caller gives none: on `val`, 20 NFE matched or beat 50 for DDS/POCS
    # (runs/c_sweep*, benchmarks/recon_speed.py); CCDF's truncated schedule needs only 10.
    default_nfe: int = 20
    # posterior samples K averaged when the caller gives none (python -m benchmarks.posterior_k on
    # `val`; benchmarks/results/posterior-k/README.md)
    default_samples: int = 1

    def __init__(self, **params) -> None:
        allowed = {**BASE_DEFAULTS, **self.defaults}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise InputError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(allowed)})"
            )
        merged = {k: _coerce(k, params.get(k, v), v) for k, v in allowed.items()}
        if merged["sampler"] not in SAMPLERS:
            raise InputError(
                f"{self.name}: sampler must be one of {', '.join(SAMPLERS)}, got {merged['sampler']}"
            )
        if merged.get("noise", 0.0) < 0:
            raise InputError(
                f"{self.name}: noise must be >= 0 (a multiple of the estimated noise), got {merged['noise']}"
            )
        self.params = MappingProxyType(merged)

    @property
    def name(self) -> str:
        """Registry-style name of the method."""
        return type(self).__name__.lower()

    @property
    def sampler(self) -> str:
        """Prior step used by the loop."""
        return self.params["sampler"]

    @property
    def eta(self) -> float:
        """DDIM eta (ignored by ancestral and Heun)."""
        return self.params["eta"]

    def schedule(self, nfe: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
        """Sigmas using at most ``nfe`` denoiser calls (``schedules.make``: karras, vp-linear, vp-cosine)."""
        n = steps_for_nfe(nfe, self.sampler)
        kind = self.params["schedule"]
        if kind not in SCHEDULES:
            raise InputError(f"{self.name}: unknown schedule '{kind}' ({', '.join(SCHEDULES)})")
        return make(kind, n, sigma_min, sigma_max, self.params["rho"])

    def prepare(
        self, y: torch.Tensor, op, sigmas: torch.Tensor, generators: Sequence[torch.Generator], init=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Start from pure noise at ``sigmas[0]``: ``x = sigma_max * (randn + 1j randn)``, ``(B, H, W)``."""
        like = torch.zeros(y.shape[:1] + y.shape[-2:], dtype=y.dtype, device=y.device)
        return float(sigmas[0]) * batch_noise(like, generators), sigmas

    def __call__(
        self, step: Step, y: torch.Tensor, op, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not define a correction")

    def measurement_noise(self, y: torch.Tensor) -> torch.Tensor | None:
        """``noise`` times the thermal noise estimated from ``y``'s outermost measured k-space ``(B,)``
        (:func:`mrdiff.noise.kspace_noise_sigma`; ``y`` is on the prior's scale, so is the result), or
        None with ``noise = 0`` (measurements treated as noiseless). The loop passes the same ``y`` at
        every step, so the estimate is computed once per ``y`` object and kept."""
        factor = self.params.get("noise", 0.0)
        if factor == 0:
            return None
        memo = self.__dict__.get("_noise_memo")
        if memo is None or memo[0] is not y:
            memo = self._noise_memo = (y, kspace_noise_sigma(y))
        return factor * memo[1]

    def step_weight(self, step: Step, y: torch.Tensor) -> float | torch.Tensor:
        """How far this step moves towards the measurements: 1 with ``noise = 0``, else the
        :func:`data_weight` of the step against :meth:`measurement_noise` ``(B,)``."""
        sigma_y = self.measurement_noise(y)
        return 1.0 if sigma_y is None else data_weight(step.sigma, step.sigma_next, sigma_y)

    def replace_measured(self, step: Step, x, y, op, generators, lam: float = 1.0, region=None):
        """POCS-style data consistency of the state ``x`` at ``step.sigma_next``: its measured k-space
        (inside ``region``) moved ``lam`` of the way to ``y`` noised to that level. With a ``noise``
        parameter > 0 the noise already in ``y`` is accounted for (:func:`noised_measurement`) and
        ``lam`` is scaled by :func:`data_weight`."""
        y_t = noised_measurement(y, op, step.sigma_next, generators, self.measurement_noise(y))
        return op.project(x, y_t, lam * self.step_weight(step, y), region)


def noised_measurement(y, op, sigma: float, generators, sigma_y: torch.Tensor | None = None) -> torch.Tensor:
    """``y + sigma A z``: the measurement of ``x0 + sigma z`` (``y`` at noise level sigma), ``(B,C,H,W)``.

    With the measurement noise ``sigma_y`` ``(B,)`` the added noise is ``sqrt(max(sigma^2 - sigma_y^2,
    0))``, so that ``y``'s own noise counts towards the level (none is added once ``sigma <= sigma_y``).
    """
    if sigma == 0:
        return y
    like = torch.zeros(y.shape[:1] + y.shape[-2:], dtype=y.dtype, device=y.device)
    if sigma_y is None:
        return y + sigma * op.A(batch_noise(like, generators))
    add = (sigma**2 - sigma_y.double() ** 2).clamp_min(0).sqrt().to(y.real.dtype).reshape(-1, 1, 1)
    return y + op.A(add * batch_noise(like, generators))


def data_weight(sigma: float, sigma_next: float, sigma_y: torch.Tensor) -> torch.Tensor:
    """Fraction of the way to the measurements for a step ``sigma -> sigma_next``, per item ``(B,)``.

    1 while ``sigma_next >= sigma_y``: the state's measured k-space is replaced by ``y`` noised up to
    the new level (:func:`noised_measurement`). Below the measurement noise ``y`` cannot be brought to
    the level, and the step is a gradient step on the annealed likelihood ``N(y; A x, (sigma_y^2 +
    sigma^2) I)`` of Jalal et al. (NeurIPS 2021, "Robust compressed sensing MRI with deep generative
    priors") with the reverse-SDE step size ``sigma^2 - sigma_next^2``:
    ``w = (sigma^2 - sigma_next^2) / (sigma^2 + sigma_y^2)``. These weights sum to about ``ln 2`` over
    any schedule below ``sigma_y``, however many steps it has. Replacing at every step instead makes
    the many low-noise steps of a long schedule, where the denoiser hardly changes its input, act as
    Landweber iterations towards the unregularised least-squares fit of the noisy data (on `val` at
    30 dB its PSNR is 17.6 dB, below zero-filled): CCDF and DDS got worse beyond NFE 50 and 20.
    """
    sy2 = sigma_y.double() ** 2
    w = (sigma**2 - sigma_next**2) / (sigma**2 + sy2).clamp_min(1e-30)
    return torch.where(sy2 <= sigma_next**2, torch.ones_like(sy2), w)

"""Shared machinery of the measurement-consistency methods (one method per module).

A method is immutable after construction. The loop (``mrdiff.sampling.reverse_loop``) reads
``needs_grad``, ``sampler`` and ``eta``; ``schedule`` maps an NFE budget to sigmas; ``prepare`` gives
the start point (and may change the schedule, e.g. CCDF's truncation); ``__call__`` turns a prior
:class:`~mrdiff.sampling.Step` into the corrected next state.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch

from mrdiff.errors import InputError
from mrdiff.sampling import SAMPLERS, Step, batch_noise
from mrdiff.schedules import SCHEDULES, make, steps_for_nfe

BASE_DEFAULTS = {"sampler": "ancestral", "eta": 1.0, "schedule": "karras", "rho": 7.0}


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


def noised_measurement(y, op, sigma: float, generators) -> torch.Tensor:
    """``y + sigma A z``: the measurement of ``x0 + sigma z`` (``y`` at noise level sigma), ``(B,C,H,W)``."""
    if sigma == 0:
        return y
    like = torch.zeros(y.shape[:1] + y.shape[-2:], dtype=y.dtype, device=y.device)
    return y + sigma * op.A(batch_noise(like, generators))

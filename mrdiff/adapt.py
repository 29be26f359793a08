"""Test-time adaptation of the prior to the scan: LoRA adapters fitted to the scan's own k-space.

Deep diffusion image prior (DDIP; Chung & Ye, "Deep diffusion image prior for efficient OOD
adaptation in 3D inverse problems", ECCV 2024, Alg. 1) and steerable conditional diffusion (SCD;
Barbano et al., IEEE TMI 2025) fine-tune the prior *during* the reverse process: at each sampling
step a few Adam steps on the adapters minimise the data misfit of the denoised estimate,
``||A D_theta(x_t, sigma) - y||^2``, and the adapted network is used from then on. Here:

- the misfit is taken on the *fit set* only, ``||M_fit (A D(x_t, sigma) - y)||^2 / ||M_fit y||^2``,
  and the reverse process that produces ``x_t`` sees only the fit set too (a new operator with a
  smaller mask, :func:`mrdiff.tuning.fit_operator`), so the held-out samples are truly unseen;
- adaptation runs only at low noise (``sigma <= AdaptSpec.sigma``), where ``D(x_t)`` is close to the
  image and its misfit says something about the prior rather than about the noise;
- early stopping (DIP's remedy against fitting noise; Ulyanov et al., CVPR 2018): within a sampling
  step the adapter state with the lowest held-out error ``||M_ho (A D(x_t) - y)||^2 / ||M_ho y||^2``
  is kept (the one before the step included), and adaptation stops for good after ``patience``
  sampling steps that did not lower it.

The fitting is a callback of the one reverse loop (:class:`AdapterFit`); the adapters sit in a
denoiser wrapper (:class:`mrdiff.priors.lora.AdaptedDenoiser`). One adapter is fitted per volume on a
few central slices (``mrdiff.pipeline.adapt_volume``) and then reconstructs all its slices, frozen.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from mrdiff.errors import InputError
from mrdiff.noise import make_generator, seed_for
from mrdiff.operators import CartesianOperator
from mrdiff.priors.lora import AdaptedDenoiser, adapter_parameters
from mrdiff.sampling import Step, denoise
from mrdiff.tuning import Split, fit_operator, heldout_error


@dataclass(frozen=True)
class AdaptSpec:
    """Settings of test-time adaptation (``mrdiff recon --adapt``).

    Attributes:
        rank: LoRA rank of every adapter.
        steps: Adam steps per sampling step.
        lr: Adam learning rate.
        sigma: adapt at sampling steps with sigma at or below this (prior's scale, per real component);
            the adapters are used at and below it, the prior above.
        patience: sampling steps without a held-out improvement before adaptation stops.
        slices: central slices of a volume fitted together (the adapter then serves every slice).
        split: the held-out split (one fold is used).
        early_stop: keep the adapter state with the lowest held-out error and stop after ``patience``
            steps without improvement (the default); False keeps every step (an ablation: DDIP as
            published, the held-out error only recorded).
    """

    rank: int = 4
    steps: int = 3
    lr: float = 1e-3
    sigma: float = 0.5
    patience: int = 2
    slices: int = 2
    split: Split = Split(0.1, 1, 0)
    early_stop: bool = True

    def check(self) -> AdaptSpec:
        """Return self, or raise InputError naming the first bad setting."""
        bad = [
            (self.rank >= 1, f"adapter rank must be >= 1, got {self.rank}"),
            (self.steps >= 1, f"adaptation steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"adaptation learning rate must be > 0, got {self.lr}"),
            (self.sigma > 0, f"adaptation sigma must be > 0, got {self.sigma}"),
            (self.patience >= 1, f"adaptation patience must be >= 1, got {self.patience}"),
            (self.slices >= 1, f"adaptation slices must be >= 1, got {self.slices}"),
            (0 < self.split.fraction < 1, f"held-out fraction must be in (0, 1), got {self.split.fraction}"),
        ]
        for ok, message in bad:
            if not ok:
                raise InputError(message)
        return self

    @classmethod
    def from_settings(cls, d: dict) -> AdaptSpec:
        """Inverse of :meth:`settings` (extra keys, e.g. a fit summary, are ignored)."""
        names = ("rank", "steps", "lr", "sigma", "patience", "slices")
        split = Split(d["holdout_fraction"], 1, d["holdout_seed"])
        return cls(**{k: d[k] for k in names}, split=split, early_stop=d.get("early_stop", True))

    def settings(self) -> dict:
        """The settings as plain values (output file attributes)."""
        out = asdict(self)
        out.pop("split")
        return {**out, "holdout_fraction": self.split.fraction, "holdout_seed": self.split.seed}


def fit_error(x0: torch.Tensor, y: torch.Tensor, fit: CartesianOperator) -> torch.Tensor:
    """DDIP's data term on the fit set, ``||M_fit (A x0 - y)||^2 / ||M_fit y||^2`` averaged over the batch.

    Args:
        x0: denoised estimate ``(B, H, W)`` (attached to the adapters' graph).
        y: measured k-space ``(B, C, H, W)`` on the scale of ``x0``.
        fit: the fit-set operator (:func:`mrdiff.tuning.fit_operator`).
    """
    y_fit = y * fit.mask.to(y.device)
    num = (fit.A(x0.to(y.dtype)) - y_fit).flatten(1).norm(dim=1) ** 2
    return (num / (y_fit.flatten(1).norm(dim=1) ** 2).clamp_min(1e-30)).mean()


class AdapterFit:
    """Reverse-loop callback that fits the adapters of an :class:`AdaptedDenoiser` (DDIP, Alg. 1, l. 4-6).

    After each reverse step at ``sigma <= spec.sigma`` it takes ``spec.steps`` Adam steps on
    :func:`fit_error` at that step's state ``x_t``, keeps the adapter state (before or after any of
    the steps) with the lowest held-out error, and stops adapting after ``spec.patience`` steps with
    no improvement. Every forward pass of one sampling step sees the same tiling (a patch prior's
    offsets come from generators seeded by ``(seed, step index, item)``).

    Args:
        denoiser: the wrapper whose ``adapted`` copy is trained in place.
        y: all measured k-space ``(B, C, H, W)``, on the scale of the loop's state.
        op: operator of ``y`` (all measured samples).
        held: the held-out mask (broadcastable to ``(H, W)``).
        spec: the adaptation settings.
        seed: base seed of the fitting passes' generators.
    """

    def __init__(
        self, denoiser: AdaptedDenoiser, y, op: CartesianOperator, held, spec: AdaptSpec, seed: int = 0
    ):
        self.denoiser, self.y, self.op, self.held, self.spec, self.seed = denoiser, y, op, held, spec, seed
        self.fit = fit_operator(op, held)
        self.params = adapter_parameters(denoiser.adapted)
        self.optimizer = torch.optim.Adam(self.params, lr=spec.lr)
        self.strikes, self.history, self.seconds = 0, [], 0.0

    @property
    def stopped(self) -> bool:
        """True once ``patience`` sampling steps in a row failed to lower the held-out error."""
        return self.strikes >= self.spec.patience

    def __call__(self, step: Step, x_next: torch.Tensor) -> None:
        """Adapt at ``step.x`` (the state at ``step.sigma``) if the step is low-noise and not stopped."""
        if self.stopped or step.sigma > self.spec.sigma or step.sigma <= 0:
            return
        t0 = time.perf_counter()
        errors = self._fit_step(step.x.detach(), step.sigma, step.index)
        best = self._keep(errors)
        self.strikes = 0 if best > 0 or not self.spec.early_stop else self.strikes + 1
        self.seconds += time.perf_counter() - t0
        self.history.append({"sigma": step.sigma, "heldout": errors, "kept": best})

    def _fit_step(self, x: torch.Tensor, sigma: float, index: int) -> list[float]:
        """``spec.steps`` Adam steps at ``x``; keeps the state with the lowest held-out error (the last
        one without ``spec.early_stop``); returns held-out errors before and after each step."""
        errors, states = [], []
        for i in range(self.spec.steps + 1):
            with torch.set_grad_enabled(i < self.spec.steps):
                x0 = denoise(self.denoiser.adapted, x, sigma, generators=self._generators(index, x.shape[0]))
                errors.append(float(heldout_error(x0.detach(), self.y, self.op, self.held).mean()))
                states.append([p.detach().clone() for p in self.params])
                if i < self.spec.steps:
                    self.optimizer.zero_grad(set_to_none=True)
                    fit_error(x0, self.y, self.fit).backward()
                    self.optimizer.step()
        with torch.no_grad():
            for p, kept in zip(self.params, states[self._keep(errors)]):
                p.copy_(kept)
        return errors

    def _keep(self, errors: list[float]) -> int:
        """Index of the state to keep: lowest held-out error, or the last without early stopping."""
        return min(range(len(errors)), key=errors.__getitem__) if self.spec.early_stop else len(errors) - 1

    def _generators(self, index: int, batch: int) -> list[torch.Generator]:
        """Fresh generators for one sampling step's fitting passes (same tiling for each pass)."""
        device = self.y.device
        return [make_generator(seed_for(self.seed, "adapt", index, b), device) for b in range(batch)]

    def summary(self) -> dict:
        """What the fitting did, as plain values: sampling steps adapted and those where a step lowered
        the held-out error, and the held-out error before and after (the kept state) every adapted step."""
        per_step = [[round(h["heldout"][0], 6), round(h["heldout"][h["kept"]], 6)] for h in self.history]
        return {
            "sampling_steps_adapted": len(self.history),
            "sampling_steps_improved": sum(min(h["heldout"]) < h["heldout"][0] for h in self.history),
            "early_stopped": self.stopped,
            "heldout_before": per_step[0][0] if per_step else None,
            "heldout_after": per_step[-1][1] if per_step else None,
            "heldout_per_step": per_step,
            "fit_seconds": round(self.seconds, 2),
        }

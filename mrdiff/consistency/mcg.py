"""MCG: manifold-constrained gradient followed by projection."""

from __future__ import annotations

import torch

from mrdiff.consistency.base import NOISE_DEFAULTS, Consistency


def residual_gradient(step, y, op) -> tuple[torch.Tensor, torch.Tensor]:
    """``grad_x ||y - A D(x)||^2`` through the denoiser, and ``||y - A D(x)||`` per item ``(B,)``."""
    r = (y - op.A(step.x0_hat)).flatten(1).norm(dim=1)
    (grad,) = torch.autograd.grad((r**2).sum(), step.x)
    return grad, r.detach()


class MCG(Consistency):
    """Chung, Sim, Ryu & Ye, NeurIPS 2022, Eq. 14-16: ``x'' = x' - alpha grad_x ||y - A x0_hat(x)||^2``, then
    projection onto the noised measurements (as in POCS).

    ``alpha = zeta / ||y - A x0_hat||`` per item (the normalised step of the authors' code).
    Measurement noise: the projection imposes ``y`` (with its noise) exactly on the mask; ``lam`` < 1
    softens it.
    """

    needs_grad = True
    defaults = {"zeta": 1.0, "lam": 1.0, **NOISE_DEFAULTS}
    tunable = {"zeta": (0.1, 10.0, "log")}

    def __call__(self, step, y, op, generators):
        grad, r = residual_gradient(step, y, op)
        alpha = (self.params["zeta"] / r.clamp_min(1e-12)).reshape(-1, 1, 1)
        x = step.x_next.detach() - alpha * grad
        return self.replace_measured(step, x, y, op, generators, self.params["lam"])

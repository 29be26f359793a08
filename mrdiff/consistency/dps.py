"""DPS: diffusion posterior sampling by a gradient step through the denoiser."""

from __future__ import annotations

from mrdiff.consistency.base import Consistency
from mrdiff.consistency.mcg import residual_gradient


class DPS(Consistency):
    """Chung, Kim, Mccann, Klasky & Ye, ICLR 2023, Alg. 1 / Eq. 16: gradient step on the residual of D(x).

    ``x_next = x' - zeta_i grad_x ||y - A x0_hat(x)||^2`` with ``zeta_i = zeta / ||y - A x0_hat||``
    per item (the paper's appendix C.2). No projection: the gradient of the Gaussian likelihood is
    the only data term, so noisy measurements are never fitted exactly (the paper's model for
    Gaussian measurement noise); outputs are only approximately consistent.
    """

    needs_grad = True
    defaults = {"zeta": 5.0}
    tunable = {"zeta": (0.3, 30.0, "log")}

    def __call__(self, step, y, op, generators):
        grad, r = residual_gradient(step, y, op)
        zeta = (self.params["zeta"] / r.clamp_min(1e-12)).reshape(-1, 1, 1)
        return step.x_next.detach() - zeta * grad

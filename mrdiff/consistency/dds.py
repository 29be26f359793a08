"""DDS: decomposed diffusion sampling (CG on the denoised estimate inside DDIM)."""

from __future__ import annotations

from mrdiff.consistency.base import Consistency
from mrdiff.operators import conjugate_gradient


class DDS(Consistency):
    """Chung, Lee & Ye, ICLR 2024, Eq. 13-14 / Alg. 1: M CG steps on the normal equations at x0_hat, then DDIM

    ``x0' = CG_M(A^H A + gamma I, A^H y + gamma x0_hat; start x0_hat)``, then the DDIM step (eta
    re-noising) from ``x0'`` with the network's noise estimate.

    ``cg_iters`` Krylov steps start at ``x0_hat`` (so they stay on the tangent of the clean-data
    manifold); ``damping`` is gamma. Measurement noise: handled by early stopping (few CG steps) and
    ``damping`` > 0 (a Tikhonov pull to ``x0_hat``); ``y`` is never imposed exactly.
    """

    # K = 4 averaged samples: +0.12 to +0.61 dB on `val` at NFE 10 (benchmarks/results/posterior-k)
    default_samples = 4
    defaults = {"sampler": "ddim", "eta": 1.0, "cg_iters": 3, "damping": 0.0}
    tunable = {"damping": (1e-3, 1.0, "log"), "cg_iters": (1, 10, "int")}

    def __call__(self, step, y, op, generators):
        gamma = self.params["damping"]
        rhs = op.AH(y) + gamma * step.x0_hat
        x0 = conjugate_gradient(op.normal, rhs, x0=step.x0_hat, iters=self.params["cg_iters"], damping=gamma)
        return step.with_x0(x0)

"""POCS: projection onto the (noised) measurements after every prior step."""

from __future__ import annotations

from mrdiff.consistency.base import Consistency, noised_measurement


class POCS(Consistency):
    """Song, Shen, Xing & Ermon, ICLR 2022, Eq. 9-10 (also Chung & Ye, MedIA 2022): k-space replacement.

    After the prior step to ``sigma_next`` the measured coil k-space is replaced by the measurement
    noised to that level, ``y + sigma_next * A z`` (``lam`` < 1 mixes instead of replacing).
    With ``clean=True`` the projection acts on the denoised estimate ``x0_hat`` instead and the prior
    step is re-taken from it. The last step (sigma_next = 0) uses ``y`` itself, so with ``lam = 1``
    single-coil outputs are exactly consistent on the mask.

    Measurement noise: ``y`` is enforced as measured (hard replacement keeps its noise); for noisy
    data set ``lam`` < 1 to average the prior proposal with the measurement.
    """

    defaults = {"clean": False, "lam": 1.0}
    tunable = {"lam": (0.5, 1.0, "linear")}

    def __call__(self, step, y, op, generators):
        lam = self.params["lam"]
        if self.params["clean"]:
            return step.with_x0(op.project(step.x0_hat, y, lam))
        y_t = noised_measurement(y, op, step.sigma_next, generators)
        return op.project(step.x_next, y_t, lam)

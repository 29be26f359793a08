"""RePaint: k-space replacement with resampling jumps back up the schedule."""

from __future__ import annotations

from mrdiff.consistency.pocs import POCS
from mrdiff.schedules import denoising_steps, karras, repaint


class RePaint(POCS):
    """Lugmayr et al., CVPR 2022, Eq. 8-9 and Alg. 1: ``x = M y_t + (1 - M) x'`` with jumps back up.

    Each fall replaces the measured k-space by ``y`` noised to the new level (as in :class:`POCS`);
    after every ``jump_length`` falls the state is re-noised back up that many levels and the block
    is resampled, ``resample`` times in all. The NFE budget counts every fall, so the base schedule
    has about ``nfe / resample`` levels. Measurement noise: as in POCS.
    """

    defaults = {**POCS.defaults, "jump_length": 5, "resample": 3}

    def schedule(self, nfe, sigma_min, sigma_max):
        """The longest jump schedule whose number of falls is at most ``nfe``."""
        j, r = self.params["jump_length"], self.params["resample"]
        for n in range(max(1, nfe // r + 2), 0, -1):
            sig = repaint(karras(n, sigma_min, sigma_max, self.params["rho"]), j, r)
            if denoising_steps(sig) <= nfe or n == 1:
                return sig
        raise ValueError(f"no RePaint schedule fits nfe={nfe}")

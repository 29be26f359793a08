"""Cartesian MRI forward operators y = M F S x and a batched conjugate-gradient solver.

One class covers single-coil (``maps=None``) and SENSE with any coil count (Pruessmann et al.,
MRM 1999). Operators are immutable: a new mask or new maps means a new operator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mrdiff.fft import fft2c, ifft2c


class CartesianOperator:
    """SENSE / single-coil Cartesian operator ``A = M F S``.

    Args:
        mask: boolean tensor broadcastable to ``(B, C, H, W)`` (e.g. ``(W,)`` or ``(H, W)``).
        maps: coil maps ``(B, C, H, W)`` complex with ``sum_c |S_c|^2 = 1`` on the support, or
            ``None`` for single-coil data (``C = 1``, ``S = 1``).
    """

    def __init__(self, mask: torch.Tensor, maps: torch.Tensor | None = None) -> None:
        if mask.dtype != torch.bool:
            mask = mask != 0
        if maps is not None:
            if maps.ndim != 4 or not maps.is_complex():
                raise ValueError(f"maps must be complex (B, C, H, W), got {tuple(maps.shape)} {maps.dtype}")
            torch.broadcast_shapes(mask.shape, maps.shape)
        self._mask = mask.detach().clone()
        self._maps = None if maps is None else maps.detach().clone()

    @property
    def mask(self) -> torch.Tensor:
        """The sampling mask (a copy, so the operator stays immutable)."""
        return self._mask.clone()

    @property
    def maps(self) -> torch.Tensor | None:
        """The coil maps ``(B, C, H, W)`` (a copy), or ``None`` for single-coil."""
        return None if self._maps is None else self._maps.clone()

    @property
    def num_coils(self) -> int:
        """Number of receive coils C."""
        return 1 if self._maps is None else self._maps.shape[1]

    def _mask_like(self, k: torch.Tensor) -> torch.Tensor:
        return self._mask.to(k.device)

    def coils(self, x: torch.Tensor) -> torch.Tensor:
        """Coil images ``S x``: ``(B, H, W)`` -> ``(B, C, H, W)``."""
        _check_image(x)
        if self._maps is None:
            return x[:, None]
        return self._maps.to(device=x.device, dtype=x.dtype) * x[:, None]

    def combine(self, xc: torch.Tensor) -> torch.Tensor:
        """Adjoint of ``coils``: ``sum_c conj(S_c) x_c``, ``(B, C, H, W)`` -> ``(B, H, W)``."""
        if self._maps is None:
            return xc[:, 0]
        return (self._maps.to(device=xc.device, dtype=xc.dtype).conj() * xc).sum(1)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward model ``M F S x``: ``(B, H, W)`` -> ``(B, C, H, W)``, zero off the mask."""
        k = fft2c(self.coils(x))
        return k * self._mask_like(k)

    def AH(self, y: torch.Tensor) -> torch.Tensor:
        """Exact adjoint ``S^H F^H M y``: ``(B, C, H, W)`` -> ``(B, H, W)``."""
        _check_kspace(y)
        return self.combine(ifft2c(y * self._mask_like(y)))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Normal operator ``A^H A x``."""
        return self.AH(self.A(x))

    def item(self, b: int) -> CartesianOperator:
        """The operator of batch item ``b`` alone (its maps and, for a per-item mask, its mask)."""
        mask, maps = self._mask, self._maps
        if mask.ndim == 4 and mask.shape[0] > 1:
            mask = mask[b : b + 1]
        return CartesianOperator(mask, None if maps is None else maps[b : b + 1])

    def repeat(self, k: int) -> CartesianOperator:
        """The operator of a batch in which every item is repeated ``k`` times in a row (the layout of
        ``y.repeat_interleave(k, 0)``, e.g. K posterior samples per slice)."""
        if k == 1:
            return self
        mask, maps = self._mask, self._maps
        if mask.ndim == 4 and mask.shape[0] > 1:
            mask = mask.repeat_interleave(k, 0)
        return CartesianOperator(mask, None if maps is None else maps.repeat_interleave(k, 0))

    def project_kspace(
        self,
        k: torch.Tensor,
        y: torch.Tensor,
        lam: float | torch.Tensor = 1.0,
        region: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Data consistency in coil k-space: ``k + lam M_r (y - k)``, ``(B, C, H, W)``.

        ``M_r`` is the mask, restricted to ``region`` (boolean, broadcastable) when one is given; ``lam``
        is a number or one weight per batch item ``(B,)``. With ``lam = 1`` the measured samples are
        replaced by ``y`` exactly (bit for bit) and the step is idempotent; ``lam < 1`` mixes the
        proposal with the measurement. Unmeasured samples are kept.
        """
        m = self._mask_like(k)
        if region is not None:
            m = m & region.to(k.device)
        if isinstance(lam, torch.Tensor):  # one weight per batch item
            lam = lam.to(device=k.device, dtype=k.real.dtype).reshape(-1, 1, 1, 1)
        elif lam == 1:
            return torch.where(m, y, k)
        return torch.where(m, k + lam * (y - k), k)

    def project(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        lam: float | torch.Tensor = 1.0,
        region: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Data-consistency step on an image: :meth:`project_kspace` on the coil k-space of ``x``, then
        coil-combine; complex ``(B, H, W)`` -> ``(B, H, W)``. Every consistency method uses it.

        With ``lam = 1`` and no region this equals ``x + A^H (y - A x)``. For single-coil data it is the
        exact orthogonal projection onto ``{x : A x = y}``; with coils (``S^H S = I`` on the support) it
        is the standard coil-wise replacement of score-MRI (Chung & Ye, MedIA 2022), a non-expansive step.
        """
        return self.combine(ifft2c(self.project_kspace(fft2c(self.coils(x)), y, lam, region)))

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Relative data-consistency residual ``||A x - y|| / ||y||`` per batch item, ``(B,)``."""
        r = (self.A(x) - y * self._mask_like(y)).flatten(1).norm(dim=1)
        return r / (y * self._mask_like(y)).flatten(1).norm(dim=1).clamp_min(1e-30)


def _check_image(x: torch.Tensor) -> None:
    if x.ndim != 3 or not x.is_complex():
        raise ValueError(f"expected a complex image (B, H, W), got {tuple(x.shape)} {x.dtype}")


def _check_kspace(y: torch.Tensor) -> None:
    if y.ndim != 4 or not y.is_complex():
        raise ValueError(f"expected complex k-space (B, C, H, W), got {tuple(y.shape)} {y.dtype}")


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched inner product <a, b> = sum conj(a) b over all but the first axis, ``(B,)``."""
    return (a.conj() * b).flatten(1).sum(1)


def conjugate_gradient(
    apply_normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    iters: int = 10,
    tol: float = 1e-6,
    damping: float = 0.0,
) -> torch.Tensor:
    """Batched conjugate gradient for ``(N + damping I) x = rhs`` with Hermitian PSD ``N``.

    Hestenes & Stiefel (1952). Each batch item has its own step sizes and stops (is frozen) once its
    relative residual is below ``tol``, so results do not depend on the batch composition.

    Args:
        apply_normal: callable applying ``N`` to ``(B, ...)`` tensors (e.g. ``op.normal``).
        rhs: right-hand side ``(B, ...)``.
        x0: starting point (zeros when None).
        iters: maximum number of iterations.
        tol: relative residual tolerance.
        damping: Tikhonov term added to ``N``.

    Returns:
        the approximate solution, same shape as ``rhs``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - (apply_normal(x) + damping * x)
    p = r.clone()
    rs = _bdot(r, r).real
    rhs_norm = _bdot(rhs, rhs).real.clamp_min(1e-30)
    shape = (-1,) + (1,) * (rhs.ndim - 1)
    for _ in range(iters):
        active = rs > tol**2 * rhs_norm  # converged items are frozen (singular N: no round-off blow-up)
        if not bool(active.any()):
            break
        Ap = apply_normal(p) + damping * p
        alpha = torch.where(active, rs / _bdot(p, Ap).real.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha.reshape(shape).to(x.dtype) * p
        r = r - alpha.reshape(shape).to(r.dtype) * Ap
        rs_new = _bdot(r, r).real
        beta = torch.where(active, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta.reshape(shape).to(r.dtype) * p
        rs = rs_new
    return x

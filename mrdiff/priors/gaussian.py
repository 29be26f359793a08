"""A closed-form Gaussian prior: exact denoiser and exact posterior, for testing samplers.

``x0 = mu + L z`` with ``z = randn + 1j * randn`` and covariance per real component ``C``:
either per-pixel diagonal (``C = diag(var)``) or stationary, diagonal in the centred orthonormal
Fourier basis (``C = F^H diag(var) F``). With ``x = x0 + sigma z'`` the MMSE denoiser is
``E[x0 | x] = mu + C (C + sigma^2 I)^-1 (x - mu)``, a per-entry Wiener filter in the chosen basis.
"""

from __future__ import annotations

import torch

from mrdiff.fft import fft2c, ifft2c
from mrdiff.noise import complex_randn


class GaussianPrior:
    """Denoiser (contract 2 interface) of a Gaussian image prior.

    Args:
        mean: complex ``(H, W)`` prior mean ``mu``.
        var: real ``(H, W)`` variance per real component, in pixels or (``fourier=True``) k-space.
        fourier: covariance diagonal in the centred orthonormal Fourier basis instead of pixels.
        sigma_min, sigma_max: range reported to samplers.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        var: torch.Tensor,
        fourier: bool = False,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ) -> None:
        if mean.shape != var.shape or mean.ndim != 2 or not mean.is_complex():
            raise ValueError(
                f"need complex mean and real var of one shape (H, W), got {mean.shape}, {var.shape}"
            )
        if bool((var <= 0).any()):
            raise ValueError("prior variances must be positive")
        self.mean = mean.to(torch.complex128)
        self.var = var.to(torch.float64)
        self.fourier = fourier
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.sha256 = ""
        self.config = {"kind": "gaussian", "fourier": fourier}

    def _to_basis(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x) if self.fourier else x

    def _from_basis(self, k: torch.Tensor) -> torch.Tensor:
        return ifft2c(k) if self.fourier else k

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Exact MMSE denoiser: complex ``(B, H, W)`` and sigma ``(B,)`` -> ``(B, H, W)`` in ``x.dtype``."""
        mu, var = self.mean.to(x.device), self.var.to(x.device)
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        gain = var / (var + s**2)
        out = mu + self._from_basis(gain * self._to_basis(x.to(torch.complex128) - mu))
        return out.to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` prior draws, complex128 ``(n, H, W)``."""
        z = complex_randn((n, *self.var.shape), generator, dtype=torch.complex128, device="cpu")
        return self.mean + self._from_basis(self.var.sqrt() * z)

    def covariance(self) -> torch.Tensor:
        """Dense covariance per real component, complex128 ``(H*W, H*W)`` (small images only)."""
        n = self.var.numel()
        basis = torch.eye(n, dtype=torch.complex128).reshape(n, *self.var.shape)
        cols = self._from_basis(self.var * self._to_basis(basis))
        return cols.reshape(n, n).T

    def posterior(self, y: torch.Tensor, op, sigma_y: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior of ``x0`` given ``y = A x0 + sigma_y z`` (dense linear algebra, small images).

        Args:
            y: measured k-space ``(B, C, H, W)``.
            op: operator ``A``; item b is measured by ``op.item(b)`` (its maps and, if per item, its mask).
            sigma_y: measurement noise per real component.

        Returns:
            mean complex128 ``(B, H, W)`` and marginal variance per real component float64 ``(B, H, W)``.
        """
        H, W = self.var.shape
        n = H * W
        cov, mu = self.covariance(), self.mean.reshape(n)
        basis = torch.eye(n, dtype=torch.complex128).reshape(n, H, W)
        means, variances = [], []
        for b in range(y.shape[0]):
            A = _dense_rows(op, basis, b)
            rows = A.abs().sum(1) > 0
            A, yb = A[rows], y[b].to(torch.complex128).reshape(-1)[rows]
            S = A @ cov @ A.conj().T + sigma_y**2 * torch.eye(A.shape[0], dtype=torch.complex128)
            K = cov @ A.conj().T @ torch.linalg.pinv(S, hermitian=True)
            means.append((mu + K @ (yb - A @ mu)).reshape(H, W))
            variances.append((cov - K @ A @ cov).diagonal().real.reshape(H, W))
        return torch.stack(means), torch.stack(variances)


def _dense_rows(op, basis: torch.Tensor, b: int) -> torch.Tensor:
    """Dense ``A`` of batch item ``b`` (``op.item(b)``): ``(C*H*W, H*W)`` (unmeasured rows are zero)."""
    cols = op.item(b).A(basis)  # (n, C, H, W): item b's maps broadcast over the n basis images
    return cols.reshape(basis.shape[0], -1).T

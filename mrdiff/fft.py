"""Centred orthonormal 2-D FFTs on native complex tensors (fastMRI convention)."""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes.

    Equal to ``fastmri.fft2c`` (which works on a trailing real/imag axis) and to numpy's
    ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

    Args:
        x: complex tensor ``(..., H, W)``.

    Returns:
        complex tensor ``(..., H, W)``.
    """
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT over the last two axes; the adjoint of ``fft2c``.

    Args:
        k: complex tensor ``(..., H, W)``.

    Returns:
        complex tensor ``(..., H, W)``.
    """
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)

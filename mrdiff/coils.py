"""Coil sensitivity maps from the calibration region only (ESPIRiT), normalisation, RSS.

ESPIRiT: Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI",
MRM 71:990-1001 (2014). Maps are estimated from the fully sampled centre block of the *undersampled*
k-space, never from fully sampled data, so reconstructions use only what a scanner would acquire.
``sigpy.mri.app.EspiritCalib`` only takes square calibration blocks; a 1-D fastMRI mask at 8x keeps
~5 centre columns (of 128) but all rows, so ``espirit_rect`` runs the same algorithm (sigpy's block
and FFT helpers) on the rectangular block. On a Colin27 simulation at 8x this raised CG-SENSE SSIM
from 0.41 to 0.47 over the 5x5-square sigpy call; it equals EspiritCalib on square blocks (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from mrdiff.errors import InputError

DEFAULT_KERNEL_WIDTH = 6  # sigpy's default; shrunk when the calibration block is narrower
MIN_CALIB_WIDTH = 3


def rss(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root sum of squares over the coil axis: ``(B, C, H, W)`` -> ``(B, H, W)`` real."""
    return x.abs().square().sum(dim).sqrt()


def normalize_maps(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale maps so that ``sum_c |S_c|^2 = 1`` where any coil is non-zero, and 0 elsewhere.

    Args:
        maps: complex ``(..., C, H, W)``.
        eps: norms below ``eps`` times the largest norm count as outside the support.

    Returns:
        complex tensor of the same shape and dtype.
    """
    norm = maps.abs().square().sum(-3, keepdim=True).sqrt()
    support = norm > eps * norm.amax(dim=(-3, -2, -1), keepdim=True).clamp_min(1e-30)
    return torch.where(support, maps / norm.clamp_min(1e-30), torch.zeros_like(maps))


def _centred(n_total: int, n: int) -> slice:
    """Indices of a length-``n`` window centred like ``sigpy.resize`` (start ``N // 2 - n // 2``)."""
    start = n_total // 2 - n // 2
    return slice(start, start + n)


def _fully_sampled(m: torch.Tensor, rows: int, cols: int) -> bool:
    H, W = m.shape
    return bool(m[_centred(H, rows), _centred(W, cols)].all())


def calibration_width(mask: torch.Tensor, shape: tuple[int, int]) -> int:
    """Side of the largest fully sampled square centred on the k-space centre (as ESPIRiT crops it).

    Args:
        mask: bool mask broadcastable to ``shape`` (e.g. ``(W,)`` or ``(H, W)``).
        shape: the k-space grid ``(H, W)``.

    Returns:
        the side length; 0 when the centre sample itself is missing.
    """
    m = torch.broadcast_to(mask.bool().cpu(), tuple(shape))
    side = 0
    while side < min(shape) and _fully_sampled(m, side + 1, side + 1):
        side += 1
    return side


def calibration_block(mask: torch.Tensor, shape: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the fully sampled centred block: the calibration square grown along each axis.

    For a 1-D column mask this is all ``H`` rows by the contiguous run of centre columns.

    Args:
        mask: bool mask broadcastable to ``shape``.
        shape: the k-space grid ``(H, W)``.

    Returns:
        ``(rows, cols)``; ``(0, 0)`` when the centre sample is missing.
    """
    m = torch.broadcast_to(mask.bool().cpu(), tuple(shape))
    side = calibration_width(mask, shape)
    rows, cols = side, side
    while side and rows < shape[0] and _fully_sampled(m, rows + 1, side):
        rows += 1
    while side and cols < shape[1] and _fully_sampled(m, side, cols + 1):
        cols += 1
    return rows, cols


def kernel_width_for(calib_width: int, default: int = DEFAULT_KERNEL_WIDTH) -> int:
    """ESPIRiT kernel width for a ``calib_width`` block: about half the block, at most ``default``.

    sigpy's fixed width 6 fails on blocks narrower than 6 (8x fastMRI masks keep ~5 centre lines of
    128); half the block keeps several kernel positions per axis, which estimates the maps better
    than a wide kernel with few positions (checked on birdcage maps at 4x and 8x).
    """
    return int(min(default, max(2, (calib_width + 1) // 2)))


def espirit_rect(
    ksp: np.ndarray,
    calib_shape: tuple[int, int],
    kernel_shape: tuple[int, int],
    thresh: float = 0.02,
    crop: float = 0.0,
) -> np.ndarray:
    """ESPIRiT maps from a rectangular centred calibration block (Uecker et al. 2014, Sec. 2.2-2.4).

    The same steps as ``sigpy.mri.app.EspiritCalib`` (which it equals for square blocks, see
    tests/test_coils.py) but with rectangular calibration and kernel shapes, so that the ~5 centre
    columns x H rows of an 8x fastMRI mask are all used instead of a 5x5 square. The per-pixel
    eigenproblem is solved exactly (``eigh`` of the C x C matrix) instead of by power iteration, with
    numpy and torch only (no sigpy import). Pixels are processed a block of rows at a time
    (:func:`_espirit_rows`), so memory is bounded by the block and the maps, not by ``H x W x C x C``
    (a 640 x 368, 16-coil slice needed 4 GB at once).

    Args:
        ksp: k-space ``(C, H, W)`` complex64 (only the centred ``calib_shape`` block is read).
        calib_shape: ``(rows, cols)`` of the fully sampled centred block.
        kernel_shape: ``(rows, cols)`` of the k-space kernel, smaller than ``calib_shape``.
        thresh: singular values below ``thresh * max`` are dropped (ESPIRiT's signal subspace).
        crop: maps are zeroed where the top eigenvalue is below ``crop``.

    Returns:
        maps ``(C, H, W)`` complex64 (unit norm over coils where not cropped).
    """
    C, H, W = ksp.shape
    kh, kw = kernel_shape
    calib = ksp[:, _centred(H, calib_shape[0]), _centred(W, calib_shape[1])]  # as sigpy.resize crops
    blocks = np.lib.stride_tricks.sliding_window_view(calib, (kh, kw), axis=(1, 2))  # (C, nh, nw, kh, kw)
    mat = blocks.reshape(C, -1, kh * kw).transpose(1, 0, 2).reshape(-1, C * kh * kw)
    _, sv, vh = np.linalg.svd(mat, full_matrices=False)
    kernels = vh[sv > thresh * sv.max()].reshape(-1, C, kh, kw)
    if not len(kernels) or not sv.max() > 0:
        return np.zeros_like(ksp)
    maps, eigval = _espirit_rows(torch.from_numpy(np.ascontiguousarray(kernels, np.complex64)), H, W)
    phase = torch.sgn(maps[:1]).conj()  # coil 0 sets the phase, as sigpy does
    phase = torch.where(maps[:1] == 0, torch.ones_like(phase), phase)
    return (maps * phase * (eigval > crop)).numpy().astype(np.complex64)


def _centred_idft(n: int, k: int) -> torch.Tensor:
    """``(n, k)`` matrix of the centred orthonormal inverse DFT of ``k`` samples zero-padded to ``n`` as
    ``sigpy.resize`` places them (``sigpy.ifft`` of unit vectors): separable pieces of the 2-D one.
    Plain torch, so maps need no sigpy import (5 s) nor numba compilation (1 s) in a fresh process."""
    unit = torch.zeros((k, n), dtype=torch.complex64)
    unit[:, _centred(n, k)] = torch.eye(k, dtype=torch.complex64)
    img = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(unit, dim=-1), dim=-1, norm="ortho"), dim=-1)
    return img.T.contiguous()


def _espirit_rows(
    kernels: torch.Tensor, H: int, W: int, budget: int = 2**25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvector and eigenvalue of ESPIRiT's per-pixel ``C x C`` matrix, a block of rows at a time.

    The image of each kernel (zero-padded to ``H x W``, centred inverse FFT) is separable, so a block
    of rows is two small matrix products instead of a full-size FFT per kernel; ``budget`` bytes bound
    each block's kernel images.

    Args:
        kernels: ``(n, C, kh, kw)`` complex64 signal-subspace kernels.
        H, W: the image grid.

    Returns:
        maps ``(C, H, W)`` complex64 (unit norm, arbitrary phase) and eigenvalues ``(H, W)`` float32.
    """
    n, C, kh, kw = kernels.shape
    ey, ex = _centred_idft(H, kh), _centred_idft(W, kw)
    half = torch.einsum("ncab,xb->ncax", kernels, ex)  # (n, C, kh, W)
    rows = max(1, budget // (W * C * max(n, C) * 8))
    maps, eigval = torch.empty((C, H, W), dtype=torch.complex64), torch.empty((H, W))
    for r0 in range(0, H, rows):
        img = torch.einsum("ya,ncax->yxcn", ey[r0 : r0 + rows], half)  # (rows, W, C, n)
        gram = img @ img.conj().transpose(-1, -2) * (H * W / (kh * kw))
        val, vec = torch.linalg.eigh(gram)  # ascending; the top eigenvector is the map
        maps[:, r0 : r0 + rows] = vec[..., -1].permute(2, 0, 1)
        eigval[r0 : r0 + rows] = val[..., -1]
    return maps, eigval


def _calib_rect(mask: torch.Tensor, shape: tuple[int, int], limit: int) -> tuple[int, int]:
    """The fully sampled centred rectangle used for calibration: the square grown along one axis."""
    side = calibration_width(mask, shape)
    rows, cols = calibration_block(mask, shape)
    rect = (rows, side) if rows - side >= cols - side else (side, cols)
    return min(rect[0], limit), min(rect[1], limit)


def estimate_maps(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    thresh: float = 0.02,
    crop: float = 0.0,
    kernel_width: int | None = None,
    max_calib_width: int = 32,
) -> torch.Tensor:
    """ESPIRiT coil maps from the fully sampled centre block of undersampled k-space.

    Args:
        kspace: complex ``(C, H, W)`` or ``(B, C, H, W)`` (zeros off the mask are fine).
        mask: bool mask broadcastable to ``(H, W)``.
        thresh: ESPIRiT singular-value threshold (relative to the largest).
        crop: eigenvalue threshold for the map support. Default 0 (no cropping): with narrow
            calibration blocks ESPIRiT's eigenvalues fall well below 1 inside the object, and sigpy's
            0.95 cut removed half of it in our 4x tests.
        kernel_width: ESPIRiT kernel width (square kernel); by default about half the narrow side
            of the calibration block, at most 6.
        max_calib_width: at most this many calibration rows / columns are used.

    Returns:
        maps with the shape of ``kspace`` (``complex64``), ``sum_c |S_c|^2 = 1`` on the support.

    Raises:
        InputError: when the calibration block is too small or no map survives.
    """
    if kspace.ndim == 4:
        return torch.stack(
            [estimate_maps(k, mask, thresh, crop, kernel_width, max_calib_width) for k in kspace]
        )
    if kspace.ndim != 3 or not kspace.is_complex():
        raise ValueError(f"expected complex k-space (C, H, W), got {tuple(kspace.shape)} {kspace.dtype}")
    H, W = kspace.shape[-2:]
    ch, cw = _calib_rect(mask, (H, W), max_calib_width)
    if min(ch, cw) < MIN_CALIB_WIDTH:
        raise InputError(
            f"cannot estimate coil maps: the fully sampled k-space centre is {ch}x{cw}, "
            f"need at least {MIN_CALIB_WIDTH}x{MIN_CALIB_WIDTH} (raise --center-fraction)"
        )
    # a square kernel sized to the narrow side (better maps than a long thin one at 8x)
    kh = kw = kernel_width_for(min(ch, cw)) if kernel_width is None else int(kernel_width)
    if not (1 <= kh < ch and 1 <= kw < cw):
        raise InputError(f"ESPIRiT kernel {kh}x{kw} does not fit a {ch}x{cw} calibration block")
    ksp = kspace.detach().cpu().numpy().astype(np.complex64)
    with np.errstate(invalid="ignore", divide="ignore"):  # zero calibration data: checked below
        maps = torch.from_numpy(espirit_rect(ksp, (ch, cw), (kh, kw), thresh, crop))
    maps = normalize_maps(maps)
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()) or float(maps.abs().amax()) == 0:
        raise InputError(
            f"cannot estimate coil maps: ESPIRiT found no support from a {ch}x{cw} calibration block"
        )
    return maps.to(kspace.device)

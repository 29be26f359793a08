"""Seeding and complex Gaussian noise (sigma per real component; see ``mrdiff`` conventions)."""

from __future__ import annotations

import hashlib

import torch


def seed_for(*parts: object) -> int:
    """Deterministic 63-bit seed from any parts, e.g. ``seed_for(base_seed, file_name, slice)``.

    Independent of Python's hash randomisation, so it is stable across runs and machines.
    """
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def complex_randn(
    shape: tuple[int, ...],
    generator: torch.Generator,
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Complex standard normal noise with variance 1 **per real component** (``randn + 1j*randn``).

    Args:
        shape: output shape.
        generator: source of randomness (its device is used when ``device`` is None).
        dtype: complex dtype of the result.
        device: device of the result.

    Returns:
        complex tensor of ``shape``.
    """
    device = generator.device if device is None else device
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    re = torch.randn(shape, generator=generator, dtype=real_dtype, device=device)
    im = torch.randn(shape, generator=generator, dtype=real_dtype, device=device)
    return torch.complex(re, im).to(dtype)


#: MAD of a standard normal: sigma = median(|v|) / MAD_NORMAL for zero-mean Gaussian v
MAD_NORMAL = 0.6745
#: the k-space periphery used to estimate thermal noise: the corner blocks outside the central
#: ``1 - 2 * NOISE_EDGE`` of both axes (MR images put little energy there; what signal is left only
#: biases the estimate up, i.e. towards trusting the measurements less)
NOISE_EDGE = 0.125


def kspace_noise_sigma(y: torch.Tensor, edge: float = NOISE_EDGE) -> torch.Tensor:
    """Thermal noise per real component of masked k-space ``y`` ``(B, C, H, W)``, per item ``(B,)``.

    The median absolute value of the real and imaginary parts of the *measured* (non-zero) samples in
    the four corner blocks of width ``edge * H`` by ``edge * W``, over all coils, divided by
    :data:`MAD_NORMAL` (the robust MAD estimator of Donoho & Johnstone, Biometrika 81:425, 1994, applied
    to the k-space periphery, which holds mostly noise). With an orthonormal FFT and coil maps with
    ``S^H S = 1`` this is also the noise of the coil-combined image. An item with no measured sample in
    the corners gets 0 (treated as noiseless).
    """
    H, W = y.shape[-2:]
    h, w = max(1, int(round(edge * H))), max(1, int(round(edge * W)))
    rows = torch.cat([torch.arange(h), torch.arange(H - h, H)]).to(y.device)
    cols = torch.cat([torch.arange(w), torch.arange(W - w, W)]).to(y.device)
    corners = y[..., rows[:, None], cols[None, :]].reshape(y.shape[0], -1)
    out = torch.zeros(y.shape[0], dtype=torch.float64)
    for b, item in enumerate(corners):
        v = item[item != 0]
        if v.numel():
            out[b] = float(torch.cat([v.real, v.imag]).abs().median()) / MAD_NORMAL
    return out.to(y.device)

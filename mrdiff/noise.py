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

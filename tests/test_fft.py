"""Centred orthonormal FFT: equals numpy's centred ortho FFT and fastmri.fft2c."""

import fastmri
import numpy as np
import pytest
import torch

from mrdiff.fft import fft2c, ifft2c


def _rand(shape, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)).to(dtype)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 4, 15, 20)])
def test_fft2c_matches_numpy(shape):
    x = _rand(shape, dtype=torch.complex128)
    ref = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    np.testing.assert_allclose(fft2c(x).numpy(), ref, atol=1e-12)
    ref_inv = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    np.testing.assert_allclose(ifft2c(x).numpy(), ref_inv, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 4, 17, 12)])
def test_fft2c_matches_fastmri(shape):
    x = _rand(shape, seed=1)
    ours = torch.view_as_real(fft2c(x))
    theirs = fastmri.fft2c(torch.view_as_real(x))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.view_as_real(ifft2c(x)), fastmri.ifft2c(torch.view_as_real(x)), atol=1e-5, rtol=1e-5
    )


def test_fft_roundtrip_and_parseval():
    x = _rand((2, 3, 16, 10), seed=2, dtype=torch.complex128)
    torch.testing.assert_close(ifft2c(fft2c(x)), x)
    torch.testing.assert_close(fft2c(x).abs().square().sum(), x.abs().square().sum())

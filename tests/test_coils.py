"""ESPIRiT maps from the calibration region only: narrow blocks work, impossible ones fail clearly."""

import numpy as np
import pytest
import torch
from conftest import simulate

from mrdiff.coils import calibration_block, estimate_maps, kernel_width_for, normalize_maps, rss
from mrdiff.errors import InputError
from mrdiff.masks import make_mask


@pytest.fixture(scope="module")
def scan():
    x, maps, k, _ = simulate(slices=1, coils=4, H=64, W=128, noise=1e-3)
    return torch.from_numpy(x[0]), torch.from_numpy(maps[0]), torch.from_numpy(k[0])


def _agreement(est, true, support):
    """|<S_est, S_true>| per pixel: 1 where the maps agree up to a phase."""
    return (est.conj() * true).sum(0).abs()[support]


@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_maps_from_narrow_calibration(scan, accel, cf):
    x, maps, k = scan
    mask = make_mask("random", (64, 128), accel, cf, "f.h5")
    rows, cols = calibration_block(mask, (64, 128))
    assert rows == 64 and (cols < 6 if accel == 8 else cols >= 10)
    est = estimate_maps(k * mask, mask)
    support = x.abs() > 0.05
    norm = est.abs().square().sum(0)
    torch.testing.assert_close(norm[support], torch.ones_like(norm[support]), atol=1e-4, rtol=0)
    assert float(_agreement(est, maps, support).median()) > 0.98


def test_uses_only_the_calibration_region(scan):
    _, _, k = scan
    mask = make_mask("random", (64, 128), 4, 0.08, "f.h5")
    noisy_outside = k * mask + (~as_bool(mask, k)) * 1e3  # garbage where nothing was sampled
    a = estimate_maps(k * mask, mask)
    b = estimate_maps(noisy_outside, mask)
    torch.testing.assert_close(a, b)


def as_bool(mask, k):
    return torch.broadcast_to(mask, k.shape)


def test_batched_maps(scan):
    _, _, k = scan
    mask = make_mask("random", (64, 128), 4, 0.08, "f.h5")
    est = estimate_maps(torch.stack([k * mask, 2 * k * mask]), mask)
    assert est.shape == (2, *k.shape) and est.dtype == torch.complex64
    torch.testing.assert_close(est[0], est[1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("centre", [0, 2])
def test_too_small_calibration_is_a_clear_error(scan, centre):
    _, _, k = scan
    mask = torch.zeros(128, dtype=torch.bool)
    mask[1::4] = True
    if centre:
        mask[63:65] = True
        mask[62] = mask[65] = False
    with pytest.raises(InputError, match="calibration|centre"):
        estimate_maps(k * mask, mask)


def test_zero_calibration_data_is_a_clear_error(scan):
    _, _, k = scan
    mask = make_mask("random", (64, 128), 4, 0.08, "f.h5")
    with pytest.raises(InputError, match="coil maps"):
        estimate_maps(torch.zeros_like(k), mask)


def test_calibration_block_2d():
    m = torch.zeros(32, 32, dtype=torch.bool)
    m[12:20, 10:22] = True
    m[0, :] = True
    assert calibration_block(m, (32, 32)) == (8, 12)
    assert calibration_block(torch.zeros(32, dtype=torch.bool), (32, 32)) == (0, 0)


def test_kernel_width_fits():
    for w in range(3, 40):
        assert 2 <= kernel_width_for(w) < w and kernel_width_for(w) <= 6


def test_normalize_and_rss():
    g = torch.Generator().manual_seed(0)
    m = torch.complex(torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g))
    m[:, :, 0, 0] = 0
    n = normalize_maps(m)
    s = n.abs().square().sum(1)
    assert torch.all(s[:, 0, 0] == 0)
    torch.testing.assert_close(s[:, 1:, 1:], torch.ones_like(s[:, 1:, 1:]))
    np.testing.assert_allclose(rss(m).numpy(), np.sqrt((np.abs(m.numpy()) ** 2).sum(1)), rtol=1e-6)


def test_rectangular_espirit_equals_sigpy_on_square_blocks(scan):
    import sigpy.mri

    from mrdiff.coils import espirit_rect

    _, _, k = scan
    ksp = k.numpy()
    ref = sigpy.mri.app.EspiritCalib(
        ksp, calib_width=12, kernel_width=5, crop=0.0, show_pbar=False, max_iter=400
    ).run()
    ours = espirit_rect(ksp, (12, 12), (5, 5), crop=0.0)
    np.testing.assert_allclose(ours, ref, atol=1e-3)

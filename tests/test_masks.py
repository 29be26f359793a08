"""Masks: acceleration and centre fraction obeyed, reproducible from the file name, fastMRI-identical."""

import numpy as np
import pytest
import torch
from fastmri.data import subsample

from mrdiff.coils import calibration_block
from mrdiff.errors import InputError
from mrdiff.masks import FASTMRI_KINDS, MASK_KINDS, as_2d, fastmri_seed, make_mask, sampling_fraction

SHAPE = (64, 96)


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_shape_centre_and_acceleration(kind, accel, cf):
    m = make_mask(kind, SHAPE, accel, cf, "file1000.h5")
    assert m.dtype == torch.bool
    assert as_2d(m, SHAPE).shape == SHAPE
    rows, cols = calibration_block(m, SHAPE)
    if kind == "poisson":
        assert m.shape == SHAPE
        assert min(rows, cols) >= round(min(SHAPE) * cf) - 1
    else:
        assert m.shape == (SHAPE[1],)
        assert rows == SHAPE[0] and cols >= round(SHAPE[1] * cf)
    frac = sampling_fraction(m, SHAPE)
    # equispaced / magic add the centre on top of every accel-th line (fastMRI's definition)
    hi = 1.0 / accel + (cf if kind in ("equispaced", "magic") else 0.03)
    assert 1.0 / accel - 0.03 <= frac <= hi + 0.02


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_same_name_same_mask(kind):
    a = make_mask(kind, SHAPE, 4, 0.08, "file_a.h5")
    assert torch.equal(a, make_mask(kind, SHAPE, 4, 0.08, "file_a.h5"))


@pytest.mark.parametrize("kind", ["random", "gaussian", "poisson", "equispaced_fraction"])
def test_different_names_differ(kind):
    masks = [make_mask(kind, SHAPE, 4, 0.08, f"file{i}.h5") for i in range(4)]
    assert any(not torch.equal(masks[0], m) for m in masks[1:])


@pytest.mark.parametrize("kind", FASTMRI_KINDS)
def test_equals_fastmri_mask_function_seeded_by_name(kind):
    name = "file1001.h5"
    func = subsample.create_mask_for_mask_type(kind, [0.08], [4])
    ref, _ = func((1, *SHAPE, 2), offset=None, seed=tuple(map(ord, name)))
    assert fastmri_seed(name) == tuple(map(ord, name))
    np.testing.assert_array_equal(make_mask(kind, SHAPE, 4, 0.08, name).numpy(), ref.numpy().reshape(-1) > 0)


def test_extra_seed_changes_mask():
    a = make_mask("random", SHAPE, 4, 0.08, "f.h5", seed=1)
    assert torch.equal(a, make_mask("random", SHAPE, 4, 0.08, "f.h5", seed=1))
    assert not torch.equal(a, make_mask("random", SHAPE, 4, 0.08, "f.h5", seed=2))


@pytest.mark.parametrize(
    "kind,accel,cf",
    [("nope", 4, 0.08), ("random", 0.5, 0.08), ("random", 4, 1.5), ("equispaced", 2.5, 0.08)],
)
def test_bad_arguments(kind, accel, cf):
    with pytest.raises(InputError):
        make_mask(kind, SHAPE, accel, cf, "f.h5")


def test_hyphenated_names():
    a = make_mask("equispaced-fraction", SHAPE, 4, 0.08, "f.h5")
    assert torch.equal(a, make_mask("equispaced_fraction", SHAPE, 4, 0.08, "f.h5"))


def test_poisson_redraws_with_derived_seed_when_sigpy_gives_up(monkeypatch):
    import sigpy.mri

    real, seeds = sigpy.mri.poisson, []

    def flaky(shape, accel, **kw):
        seeds.append(kw["seed"])
        if len(seeds) < 3:
            raise ValueError("Cannot generate mask to satisfy accel")
        return real(shape, accel, **kw)

    monkeypatch.setattr(sigpy.mri, "poisson", flaky)
    m = make_mask("poisson", SHAPE, 4, 0.08, "file_r.h5")
    assert m.shape == SHAPE and len(set(seeds)) == 3  # three different seeds, the third succeeded
    seeds.clear()
    assert torch.equal(m, make_mask("poisson", SHAPE, 4, 0.08, "file_r.h5"))  # still deterministic


def test_poisson_gives_one_line_error_when_every_seed_fails(monkeypatch):
    import sigpy.mri

    def never(shape, accel, **kw):
        raise ValueError("Cannot generate mask to satisfy accel")

    monkeypatch.setattr(sigpy.mri, "poisson", never)
    with pytest.raises(InputError, match="Poisson-disc mask at 4"):
        make_mask("poisson", SHAPE, 4, 0.08, "file_r.h5")

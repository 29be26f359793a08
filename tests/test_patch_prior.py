"""The patch prior family: tiling, coordinates, determinism, training, storage (PaDIS, NeurIPS 2024)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrdiff.config import from_dict, to_dict
from mrdiff.data import SliceDataset, patch_items, patch_size_for
from mrdiff.errors import InputError
from mrdiff.noise import complex_randn, make_generator
from mrdiff.priors import PatchDenoiser, build_denoiser, load_prior
from mrdiff.priors.checkpoint import export_prior, load_checkpoint
from mrdiff.priors.patch import axis_coords, canvas_size, draw_offsets, tiled_denoise
from mrdiff.sampling import denoise
from mrdiff.training import train
from tests.test_train import TINY, write_volumes

PATCH = {
    "name": "tiny-patch",
    "model": {**TINY["model"], "family": "patch", "patch_size": 16, "res_blocks": [0, 1]},
    "data": {"resolution": 32, "patch_sizes": [8, 16], "patch_margin": 4, "patches_per_image": 2},
    "train": {**TINY["train"], "batch_size": 4},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class PixelNet(torch.nn.Module):
    """A stand-in patch network that is a pixel-wise function of its inputs (and of sigma)."""

    def __init__(self, use_pos: bool = False):
        super().__init__()
        self.use_pos = use_pos
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x, sigma, pos):
        self.calls.append(tuple(x.shape))
        if self.use_pos:
            return pos.clone()
        return torch.tanh(x) * 0.5 + sigma.reshape(-1, 1, 1, 1)


def _randomise(module: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("offsets", [[(0, 0), (7, 3)], [(15, 15), (1, 0)]])
def test_tiling_reproduces_a_pixelwise_denoiser_exactly(offsets):
    x = torch.randn(2, 2, 37, 50, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 2.0])
    net = PixelNet()
    out = tiled_denoise(net, x, sigma, 16, offsets, fill=torch.randn(2, 2, 64, 80), max_tiles=5)
    assert torch.equal(out, torch.tanh(x) * 0.5 + sigma.reshape(-1, 1, 1, 1))
    assert max(shape[0] for shape in net.calls) <= 5  # memory bounded by the tile cap


@pytest.mark.parametrize("offset", [(0, 0), (5, 11), (15, 1)])
def test_coordinate_channels_at_borders_and_under_padding(offset):
    h, w = 20, 33
    out = tiled_denoise(PixelNet(use_pos=True), torch.zeros(1, 2, h, w), torch.ones(1), 16, [offset])
    rows, cols = axis_coords(torch.arange(h), h), axis_coords(torch.arange(w), w)
    assert torch.allclose(out[0, 0], rows[:, None].expand(h, w))
    assert torch.allclose(out[0, 1], cols[None, :].expand(h, w))
    assert out[0, 0, 0, 0] == pytest.approx(-1 + 1 / h) and out[0, 1, 0, -1] == pytest.approx(1 - 1 / w)
    assert canvas_size(20, 16) == 48  # whole tiles at any offset in [0, 16)


def test_tile_offsets_are_deterministic_per_generator():
    a = draw_offsets([make_generator(3), make_generator(4)], 64)
    b = draw_offsets([make_generator(3), make_generator(4)], 64)
    assert a == b and all(0 <= o < 64 for pair in a for o in pair)
    many = draw_offsets([make_generator(s) for s in range(20)], 64)
    assert len(set(many)) > 10


def _patch_denoiser() -> PatchDenoiser:
    d = build_denoiser(to_dict(from_dict(PATCH)))
    _randomise(d)
    return d.eval().requires_grad_(False)


def test_patch_denoiser_result_does_not_depend_on_batching():
    d = _patch_denoiser()
    assert isinstance(d, PatchDenoiser) and d.draws_noise
    x = complex_randn((3, 24, 40), make_generator(0))
    together = denoise(d, x, 0.5, generators=[make_generator(s) for s in (1, 2, 3)])
    alone = denoise(d, x[1:2], 0.5, generators=[make_generator(2)])
    assert together.shape == x.shape and torch.allclose(together[1:2], alone, atol=1e-6)
    again = denoise(d, x, 0.5, generators=[make_generator(s) for s in (1, 2, 3)])
    assert torch.equal(together, again)
    other = denoise(d, x, 0.5, generators=[make_generator(s) for s in (7, 8, 9)])
    assert not torch.allclose(together, other)  # a new offset per draw


def test_patch_prior_needs_coordinates_and_a_whole_image_prior_refuses_them():
    d = _patch_denoiser()
    with pytest.raises(ValueError, match="coordinate"):
        d.model(torch.zeros(1, 2, 16, 16), torch.ones(1))
    whole = build_denoiser(to_dict(from_dict(TINY)))
    with pytest.raises(ValueError, match="coordinate"):
        whole.model(torch.zeros(1, 2, 16, 16), torch.ones(1), torch.zeros(1, 2, 16, 16))


def test_patch_items_shapes_coordinates_and_determinism(tmp_path):
    cfg = from_dict(PATCH)
    data = SliceDataset(write_volumes(tmp_path / "train"), 32)
    seen = set()
    for step in range(8):
        size = patch_size_for(cfg.data, make_generator(step))
        x, pos = patch_items(data, cfg.data, size, [make_generator(step), make_generator(9)], 2)
        x2, pos2 = patch_items(data, cfg.data, size, [make_generator(step), make_generator(9)], 2)
        assert torch.equal(x, x2) and torch.equal(pos, pos2)
        alone, _ = patch_items(data, cfg.data, size, [make_generator(9)], 2)
        assert torch.equal(x[x.shape[0] // 2 :], alone)  # an image's patches depend on its generator only
        seen.add(size)
        per_image = 2 * (16 // size) ** 2  # patches_per_image counts patches of the largest size
        assert x.shape == (2 * per_image, 2, size, size) and pos.shape == (x.shape[0], 2, size, size)
        # coordinates are a jittered affine grid: constant along the other axis, increasing along their own
        assert torch.allclose(pos[:, 0].diff(dim=2), torch.zeros(()), atol=1e-6)
        assert bool((pos[:, 1].diff(dim=2) > 0).all()) and bool((pos[:, 0].diff(dim=1) > 0).all())
        assert pos.abs().max() < (1 + 2 * 4 / 32) * 1.1 + 0.1  # within the margin, with jitter
    assert seen == {8, 16}


def test_config_checks_for_the_patch_family():
    with pytest.raises(InputError, match="family"):
        from_dict({**PATCH, "model": {**PATCH["model"], "family": "tiles"}})
    with pytest.raises(InputError, match="multiples"):
        from_dict({**PATCH, "data": {**PATCH["data"], "patch_sizes": [7]}})


def test_patch_prior_trains_resumes_and_loads_with_weights_only(tmp_path):
    cfg = from_dict(PATCH)
    data = SliceDataset(write_volumes(tmp_path / "train"), 32)
    val = SliceDataset(write_volumes(tmp_path / "val", n_files=1, seed=1), 32)
    full = train(cfg, data, val, tmp_path / "full")
    assert full.history and "mse@0.1" in full.history[-1]
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    train(cfg, data, None, tmp_path / "split", stop_requested=stop_after_two)
    resumed = train(cfg, data, None, tmp_path / "split", resume=True)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert resumed.step == 6 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    prior = load_prior(tmp_path / "full" / "prior.pt")
    assert isinstance(prior, PatchDenoiser) and prior.tile == 16
    out = prior(complex_randn((1, 40, 24), make_generator(0)), 1.0, generators=[make_generator(1)])
    assert out.shape == (1, 40, 24) and torch.isfinite(torch.view_as_real(out)).all()


@pytest.mark.parametrize("config", [PATCH, TINY], ids=["patch", "image"])
def test_fp16_storage_round_trips_within_tolerance(tmp_path, config):
    d = build_denoiser(to_dict(from_dict(config)))
    _randomise(d)
    state = {"config": d.config, "step": 1, "ema": d.model.state_dict()}
    export_prior(state, tmp_path / "p32.pt")
    export_prior(state, tmp_path / "p16.pt", dtype=torch.float16)
    raw = torch.load(tmp_path / "p16.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["ema"].values() if v.is_floating_point())
    assert raw["meta"]["storage"] == "float16"
    assert (tmp_path / "p16.pt").stat().st_size < 0.6 * (tmp_path / "p32.pt").stat().st_size
    p32, p16 = load_prior(tmp_path / "p32.pt"), load_prior(tmp_path / "p16.pt")
    for key, w in p32.model.state_dict().items():  # fp16 keeps 11 significant bits
        assert torch.allclose(p16.model.state_dict()[key], w, rtol=2**-10, atol=1e-7), key
    x = complex_randn((1, 32, 32), make_generator(0))
    gens = (lambda: [make_generator(1)]) if config is PATCH else (lambda: None)
    a, b = denoise(p32, x, 0.5, generators=gens()), denoise(p16, x, 0.5, generators=gens())
    assert (a - b).abs().max() < 1e-2 * a.abs().max()


def test_an_old_fp32_prior_without_family_keys_still_loads(tmp_path: Path):
    d = build_denoiser(to_dict(from_dict(TINY)))
    config = to_dict(from_dict(TINY))
    for key in ("family", "patch_size"):
        config["model"].pop(key)
    for key in ("scale_range", "patch_sizes", "patch_margin", "patches_per_image", "coord_jitter"):
        config["data"].pop(key)
    export_prior({"config": config, "step": 1, "ema": d.model.state_dict()}, tmp_path / "old.pt")
    prior = load_prior(tmp_path / "old.pt")
    assert not isinstance(prior, PatchDenoiser) and prior.config["model"]["family"] == "image"


def test_patch_prior_fine_tunes_at_another_resolution(tmp_path):
    """A patch prior is resolution-free: --init from a prior trained on 32^2 images works at 16^2 (a
    whole-image prior is refused, its resolution is part of the model)."""
    from mrdiff.priors.checkpoint import check_compatible

    patch, whole = to_dict(from_dict(PATCH)), to_dict(from_dict(TINY))
    check_compatible(patch, {**patch, "data": {**patch["data"], "resolution": 16}}, "p.pt")
    with pytest.raises(InputError, match="resolution"):
        check_compatible(whole, {**whole, "data": {**whole["data"], "resolution": 16}}, "w.pt")

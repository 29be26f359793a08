"""Patch diffusion prior: a U-Net on P x P patches plus two coordinate channels, used on whole images
of any size by tiling (Hu, Song, Xu, Shen & Fessler, "Learning image priors through patch-based
diffusion models for solving inverse problems", NeurIPS 2024, Sec. 3: "PaDIS").

Whole-image denoising pads the image into a canvas of whole tiles at a random offset, denoises every
tile as one batch (capped, so memory is bounded by the cap and not by the image size) and crops back.
Redrawing the offset at every call moves the tile borders, so over the reverse process there are no
fixed seams and no overlap averaging is needed (PaDIS, Alg. 1). The canvas outside the image holds
``sigma`` times fresh noise, as the zero margin of a training patch does after noising.

Coordinates: pixel ``i`` of an image of ``n`` pixels along an axis has coordinate ``(2 i + 1) / n - 1``,
so the image spans [-1, 1] on both axes whatever its size; margin pixels lie outside that range.
Channel 0 is the row (vertical) coordinate, channel 1 the column coordinate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mrdiff.priors.precond import Denoiser, EDMPrecond


def axis_coords(index: torch.Tensor, n: int) -> torch.Tensor:
    """Coordinates ``(2 i + 1) / n - 1`` of integer pixel indices ``index`` along an axis of ``n`` pixels."""
    return (2.0 * index.float() + 1.0) / n - 1.0


def coord_channels(rows: torch.Tensor, cols: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Coordinate channels ``(2, len(rows), len(cols))`` for pixel indices of an ``h x w`` image."""
    r, c = axis_coords(rows, h), axis_coords(cols, w)
    return torch.stack([r[:, None].expand(-1, c.numel()), c[None, :].expand(r.numel(), -1)])


def canvas_size(n: int, tile: int) -> int:
    """Canvas length along an axis: whole tiles covering ``n`` pixels at any offset in ``[0, tile)``."""
    return (math.ceil(n / tile) + 1) * tile


def draw_offsets(generators: Sequence[torch.Generator], tile: int) -> list[tuple[int, int]]:
    """One ``(row, col)`` tile offset in ``[0, tile)^2`` per item, each from the item's own generator."""
    out = []
    for g in generators:
        o = torch.randint(tile, (2,), generator=g, device=g.device)
        out.append((int(o[0]), int(o[1])))
    return out


def to_tiles(canvas: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, C, nh*T, nw*T) -> (B*nh*nw, C, T, T), tiles in row-major order per item."""
    b, c, hh, ww = canvas.shape
    nh, nw = hh // tile, ww // tile
    t = canvas.reshape(b, c, nh, tile, nw, tile).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b * nh * nw, c, tile, tile)


def from_tiles(tiles: torch.Tensor, b: int, nh: int, nw: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: (B*nh*nw, C, T, T) -> (B, C, nh*T, nw*T)."""
    _, c, t, _ = tiles.shape
    x = tiles.reshape(b, nh, nw, c, t, t).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, nh * t, nw * t)


def tiled_denoise(
    model: EDMPrecond,
    x: torch.Tensor,
    sigma: torch.Tensor,
    tile: int,
    offsets: Sequence[tuple[int, int]],
    fill: torch.Tensor | None = None,
    max_tiles: int = 256,
) -> torch.Tensor:
    """Denoise real-channel images ``x`` (B, C, H, W) tile by tile with a patch network.

    Args:
        model: patch-family :class:`EDMPrecond` (takes coordinate channels).
        x: (B, C, H, W) noisy images.
        sigma: (B,) noise levels.
        tile: tile size (a multiple of the network's ``multiple``).
        offsets: per item, where the image's top-left pixel sits in the canvas, each in ``[0, tile)``.
        fill: unit noise for the canvas ``(B, C, Hc, Wc)`` (scaled by sigma outside the image), or None
            for a zero margin.
        max_tiles: tiles per network call (bounds memory whatever the image size).

    Returns:
        (B, C, H, W) denoised images.
    """
    b, c, h, w = x.shape
    hc, wc = canvas_size(h, tile), canvas_size(w, tile)
    canvas = torch.zeros((b, c, hc, wc), dtype=x.dtype, device=x.device)
    if fill is not None:
        canvas = canvas + sigma.reshape(-1, 1, 1, 1).to(x.dtype) * fill.to(x.dtype)
    pos = torch.empty((b, 2, hc, wc), dtype=x.dtype, device=x.device)
    parts = []
    for i, (oy, ox) in enumerate(offsets):
        rows = torch.arange(hc, device=x.device) - oy
        cols = torch.arange(wc, device=x.device) - ox
        pos[i] = coord_channels(rows, cols, h, w)
        pad = (ox, wc - w - ox, oy, hc - h - oy)
        inside = torch.nn.functional.pad(torch.ones_like(x[i, :1]), pad)
        parts.append(torch.nn.functional.pad(x[i], pad) + (1 - inside) * canvas[i])
    canvas = torch.stack(parts)
    n_per = (hc // tile) * (wc // tile)
    xt, pt = to_tiles(canvas, tile), to_tiles(pos, tile)
    st = sigma.repeat_interleave(n_per)
    chunks = zip(xt.split(max_tiles), st.split(max_tiles), pt.split(max_tiles))
    out = torch.cat([model(a, s, p) for a, s, p in chunks])
    out = from_tiles(out, b, hc // tile, wc // tile)
    return torch.stack([out[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets)])


def canvas_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    """Unit real noise ``(B, *shape)``, item b drawn from generator b."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)


class PatchDenoiser(Denoiser):
    """A patch prior as a whole-image :class:`Denoiser` (contract 2): random-offset tiling per call.

    The offset and the canvas noise of item b come from ``generators[b]``, so a result does not depend
    on how items are batched; without generators the offset is ``tile // 2`` and the margin zero
    (deterministic, e.g. for validation). The reverse loop and the consistency methods do not know
    that they are talking to a patch prior.

    Attributes:
        tile: tile size (``model.patch_size`` of the config).
        max_tiles: tiles per network call.
    """

    draws_noise = True  # mrdiff.sampling.denoise passes the items' generators

    def __init__(self, model: EDMPrecond, config: dict, sha256: str = "", max_tiles: int = 256):
        super().__init__(model, config, sha256)
        self.tile = int(config["model"]["patch_size"])
        self.max_tiles = int(max_tiles)

    def denoise_channels(
        self, xc: torch.Tensor, sigma: torch.Tensor, generators: Sequence[torch.Generator] | None
    ) -> torch.Tensor:
        """Tiled denoising of real channels ``(B, C, H, W)`` (see :func:`tiled_denoise`)."""
        b, c, h, w = xc.shape
        if generators is None:
            offsets, fill = [(self.tile // 2, self.tile // 2)] * b, None
        else:
            if len(generators) != b:
                raise ValueError(f"need one generator per item: {len(generators)} for batch {b}")
            offsets = draw_offsets(generators, self.tile)
            shape = (c, canvas_size(h, self.tile), canvas_size(w, self.tile))
            fill = canvas_noise(generators, shape, xc.device)
        return tiled_denoise(self.model, xc, sigma, self.tile, offsets, fill, self.max_tiles)

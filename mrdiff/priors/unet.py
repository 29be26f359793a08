"""A small noise-conditional U-Net (Ho et al. 2020; Dhariwal & Nichol 2021 "ADM" blocks).

Every level works at its own resolution with overlapping 3x3 convolutions, downsampling is a strided
3x3 convolution and upsampling is nearest-neighbour followed by a 3x3 convolution, so there is no
space-to-depth block grid (which showed as a seam in an earlier experiment). The noise level enters
through an embedding of ``c_noise`` that scales and shifts every residual block's normalised features
(adaptive GroupNorm); self-attention is used only at the low resolutions listed in the config.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mrdiff.config import ModelConfig


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so the residual branch starts as identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of c_noise at log-spaced frequencies, then an MLP (Vaswani et al. 2017)."""

    def __init__(self, channels: int, base: int = 64):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, channels), nn.SiLU(), nn.Linear(channels, channels))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        """Args: c_noise (B,). Returns: (B, channels)."""
        half = self.base // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(200.0), half, device=c_noise.device))
        args = c_noise.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with adaptive scale/shift from the noise embedding (ADM, Sec. 3)."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Args: x (B, c_in, H, W), emb (B, E). Returns: (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over pixels with a residual connection (Vaswani et al. 2017)."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns: (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, c_ins: list[int], c_out: int, cfg: ModelConfig, attend: bool):
        super().__init__()
        e, g = cfg.emb_channels, cfg.groups
        self.blocks = nn.ModuleList(ResBlock(c, c_out, e, g, cfg.dropout) for c in c_ins)
        self.attn = nn.ModuleList(
            Attention(c_out, cfg.head_channels, g) if attend else nn.Identity() for _ in c_ins
        )


class UNet(nn.Module):
    """Noise-conditional U-Net ``F(x, c_noise)`` on real channels.

    Args:
        cfg: width per level, blocks per level, attention levels, embedding size.

    Shapes: x (B, in_channels [+ 2 coordinate channels for a patch prior], H, W) with H, W multiples
    of ``self.multiple``; c_noise (B,); output (B, in_channels, H, W).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch, nb = list(cfg.channels), list(cfg.res_blocks)
        self.multiple = 2 ** (len(ch) - 1)
        self.embed = NoiseEmbedding(cfg.emb_channels)
        extra = 2 if cfg.family == "patch" else 0  # coordinate channels of a patch prior (PaDIS)
        self.stem = nn.Conv2d(cfg.in_channels + extra, ch[0], 3, padding=1)
        skips, self.down, self.downsample = [ch[0]], nn.ModuleList(), nn.ModuleList()
        c = ch[0]
        for i, (width, n) in enumerate(zip(ch, nb)):
            attend = i in cfg.attention_levels
            self.down.append(Level(([c] + [width] * (n - 1)) if n else [], width, cfg, attend))
            c = width if n else c
            skips += [width] * n
            if i < len(ch) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = Level([c] * cfg.mid_blocks, c, cfg, attend=True)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            c_ins = []
            for _ in range(nb[i] + 1):
                c_ins.append(c + skips.pop())
                c = ch[i]
            self.up.append(Level(c_ins, ch[i], cfg, attend=i in cfg.attention_levels))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, ch[i - 1], 3, padding=1))
                c = ch[i - 1]
        self.out_norm = nn.GroupNorm(cfg.groups, c)
        self.out_conv = _zero(nn.Conv2d(c, cfg.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W), c_noise (B,). Returns: (B, C, H, W)."""
        emb = self.embed(c_noise)
        h = self.stem(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for block, attn in zip(self.mid.blocks, self.mid.attn):
            h = attn(block(h, emb))
        for j, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))

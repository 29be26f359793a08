"""Low-rank adapters (LoRA) on a prior's convolutions and linear layers, and the denoiser that uses them.

LoRA (Hu et al., "LoRA: Low-rank adaptation of large language models", ICLR 2022, Eq. 3) adds to a
frozen layer ``W`` a trainable low-rank update ``B A`` with ``B`` zero-initialised, so the adapted
network equals the prior until the first optimisation step. Test-time adaptation of a diffusion prior
to one scan fits such adapters to the scan's own measurements (steerable conditional diffusion,
Barbano et al., IEEE TMI 2025; "Deep Diffusion Image Prior", Chung & Ye, ECCV 2024, Sec. 3); the
fitting lives in :mod:`mrdiff.adapt`. A convolution's adapter is a convolution to ``rank`` channels
with the layer's kernel, stride and padding, followed by a 1x1 convolution back (the usual LoRA form
for convolutions); a linear layer's is two linear maps.

The adapters go into a *copy* of the prior (:func:`with_adapters`): the loaded prior is shared
between volumes and is never modified. :class:`AdaptedDenoiser` is a denoiser (contract 2) that uses
the adapted copy at and below the noise level it was fitted for and the prior above it, so the
reverse loop and the consistency methods never learn which one they got.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mrdiff.errors import InputError
from mrdiff.priors.guidance import PRIOR_ATTRIBUTES

_SHARED = (*PRIOR_ATTRIBUTES, "draws_noise")


class LoRA(nn.Module):
    """``layer(x) + up(down(x))`` with ``layer`` frozen and ``up`` zero-initialised (Hu et al. 2022, Eq. 3).

    Args:
        layer: an ``nn.Conv2d`` (groups 1) or ``nn.Linear``.
        rank: inner width of the update (>= 1).
    """

    def __init__(self, layer: nn.Module, rank: int):
        super().__init__()
        if isinstance(layer, nn.Conv2d) and layer.groups == 1:
            down = nn.Conv2d(
                layer.in_channels,
                rank,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                bias=False,
            )
            up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        elif isinstance(layer, nn.Linear):
            down, up = (
                nn.Linear(layer.in_features, rank, bias=False),
                nn.Linear(rank, layer.out_features, bias=False),
            )
        else:
            raise TypeError(f"LoRA adapts Conv2d (groups 1) and Linear layers, not {type(layer).__name__}")
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))  # as nn.Linear's default (Hu et al.: random A)
        nn.init.zeros_(up.weight)  # B = 0: the update starts at zero
        self.layer = layer.requires_grad_(False)
        self.down, self.up = down.to(layer.weight), up.to(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen layer plus its low-rank update; same shapes as ``layer``."""
        return self.layer(x) + self.up(self.down(x))


def add_lora(module: nn.Module, rank: int) -> list[nn.Parameter]:
    """Replace every ``Conv2d`` / ``Linear`` below ``module`` by :class:`LoRA` (in place).

    Returns:
        the adapters' parameters (everything else in ``module`` is frozen).
    """
    if rank < 1:
        raise InputError(f"adapter rank must be >= 1, got {rank}")
    module.requires_grad_(False)
    targets = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and child.groups == 1)
    ]
    if not targets:
        raise InputError(f"{type(module).__name__} has no convolution or linear layers to adapt")
    for parent, name, child in targets:
        setattr(parent, name, LoRA(child, rank))
    return adapter_parameters(module)


def adapter_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter weights (``down`` and ``up``) of every :class:`LoRA` below ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRA) for p in (m.down.weight, m.up.weight)]


class AdaptedDenoiser(nn.Module):
    """A denoiser (contract 2) that is ``adapted`` for sigma <= ``sigma_adapt`` and ``prior`` above.

    Args:
        prior: the loaded prior (not modified; its attributes are this denoiser's).
        adapted: a copy of ``prior`` with LoRA adapters (:func:`with_adapters`).
        sigma_adapt: the noise level (per real component, on the prior's scale) at and below which
            the adapters are used (they are fitted only there).
    """

    def __init__(self, prior: nn.Module, adapted: nn.Module, sigma_adapt: float):
        super().__init__()
        self.prior, self.adapted, self.sigma_adapt = prior, adapted, float(sigma_adapt)
        for name in _SHARED:
            setattr(self, name, getattr(prior, name, False if name == "draws_noise" else None))

    @property
    def device(self) -> torch.device:
        """Device of the prior's weights."""
        return self.prior.device

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, generators=None) -> torch.Tensor:
        """``adapted(x, sigma)`` for items with sigma <= ``sigma_adapt``, ``prior(x, sigma)`` for the rest."""
        s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        low = s <= self.sigma_adapt
        if bool(low.all()):
            return self._call(self.adapted, x, sigma, generators)
        if not bool(low.any()):
            return self._call(self.prior, x, sigma, generators)
        both = self._call(self.adapted, x, sigma, generators), self._call(self.prior, x, sigma, generators)
        return torch.where(low[:, None, None], *both)

    def _call(self, denoiser: nn.Module, x, sigma, generators):
        """``denoiser(x, sigma)``, with the generators if it draws noise of its own."""
        return denoiser(x, sigma, generators=generators) if self.draws_noise else denoiser(x, sigma)


def with_adapters(prior: nn.Module, rank: int, sigma_adapt: float) -> AdaptedDenoiser:
    """``prior`` wrapped with a LoRA-adapted copy of itself (identity until fitted); ``prior`` is untouched.

    Chung & Ye, ECCV 2024 (DDIP), Sec. 3.2: LoRA on the prior's convolutions and linear layers.
    """
    if not sigma_adapt > 0:
        raise InputError(f"the adaptation noise level must be > 0, got {sigma_adapt}")
    adapted = copy.deepcopy(prior)
    add_lora(adapted, rank)
    return AdaptedDenoiser(prior, adapted.eval(), sigma_adapt)

"""The module that stands at a ReLU call site once a plan decides its fate."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("relu", "identity", "mask")


class ReLUSite(nn.Module):
    """A ReLU call site: ``relu`` (kept), ``identity`` (dropped), or ``mask``.

    In ``mask`` mode only positions where the boolean mask is set go through a ReLU; the mask
    broadcasts over the per-sample activation (C,H,W) and may be per channel (C,1,1).
    Subclasses (e.g. learnable masks) override ``forward`` and ``active_relus``.
    """

    relucut_site = True  # marks a leaf that fx tracing and counting treat as one ReLU site
    site_kind = "relu"  # the non-linearity it stands for: what counting prices per active element

    def __init__(self, mode: str = "relu", mask: torch.Tensor | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (mode == "mask") != (mask is not None):
            raise ValueError("a mask is given exactly when mode is 'mask'")
        self.mode = mode
        self.register_buffer("mask", None if mask is None else mask.to(torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "relu":
            return F.relu(x)
        if self.mode == "identity":
            return x
        return torch.where(self.mask, F.relu(x), x)

    def active_relus(self, shape: tuple[int, ...]) -> int:
        """ReLUs evaluated per input of per-sample ``shape`` (C,H,W): what private inference pays."""
        if self.mode == "relu":
            return math.prod(shape)
        if self.mode == "identity":
            return 0
        return int(torch.broadcast_to(self.mask, tuple(shape)).sum())

    def extra_repr(self) -> str:
        if self.mode == "mask":
            return f"mode=mask, ones={int(self.mask.sum())}/{self.mask.numel()}"
        return f"mode={self.mode}"


class ReLU6Site(ReLUSite):
    """A ReLU6 call site (``min(max(x, 0), 6)``: two comparisons per element), kept or masked.

    A dropped ReLU6 is a plain ``ReLUSite("identity")``: identity is identity, and the export then
    removes it like any dropped site.
    """

    site_kind = "relu6"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "relu":
            return F.relu6(x)
        if self.mode == "identity":
            return x
        return torch.where(self.mask, F.relu6(x), x)


def is_site_module(module: nn.Module) -> bool:
    return isinstance(module, nn.ReLU) or getattr(module, "relucut_site", False)


class AvgPoolSite(nn.AvgPool2d):
    """A max-pool site a plan turned into average pooling (DELPHI's swap): linear, no comparisons.

    An ``nn.AvgPool2d`` (exports and converters see a plain average pool) that stays addressable as
    the pool site it replaced. Padding is not averaged in, as max-pooling never picks it.
    """

    relucut_pool_site = True

    @classmethod
    def like(cls, pool: nn.MaxPool2d) -> AvgPoolSite:
        return cls(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode, count_include_pad=False)


class AdaptiveAvgPoolSite(nn.AdaptiveAvgPool2d):
    """An adaptive max-pool site turned into adaptive average pooling (global pooling heads)."""

    relucut_pool_site = True

    @classmethod
    def like(cls, pool: nn.AdaptiveMaxPool2d) -> AdaptiveAvgPoolSite:
        return cls(pool.output_size)


def is_pool_site_module(module: nn.Module) -> bool:
    """A 2-D max-pool a plan can swap for average pooling, or one it already swapped."""
    if getattr(module, "relucut_pool_site", False):
        return True
    if isinstance(module, nn.MaxPool2d):
        return not module.return_indices and module.dilation in (1, (1, 1))
    return isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices


def avgpool_like(pool: nn.Module) -> nn.Module:
    """The average-pool replacement of a max-pool site module."""
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        return AdaptiveAvgPoolSite.like(pool)
    return AvgPoolSite.like(pool)


class PartialReLU(nn.Module):
    """Exported form of a masked site: gather the mask's positions, ReLU them, scatter back.

    Only ``index.numel()`` values pass through a ReLU, so a 2PC engine evaluates exactly that many
    ReLUs (the gather/scatter use public indices and are local). ``index`` holds flat positions
    into the per-sample (C,H,W) activation.
    """

    relucut_site = True

    def __init__(self, index: torch.Tensor, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.register_buffer("index", index.to(torch.long).flatten())

    @classmethod
    def from_mask(cls, mask: torch.Tensor, shape: tuple[int, ...]) -> PartialReLU:
        full = torch.broadcast_to(mask.to(torch.bool), tuple(shape)).flatten()
        return cls(full.nonzero().flatten(), shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        active = F.relu(flat.index_select(1, self.index))
        return flat.index_copy(1, self.index, active).view_as(x)

    def active_relus(self, shape: tuple[int, ...]) -> int:
        return int(self.index.numel())

    def extra_repr(self) -> str:
        return f"relus={self.index.numel()}/{math.prod(self.shape)}"

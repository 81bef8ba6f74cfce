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


def is_site_module(module: nn.Module) -> bool:
    return isinstance(module, nn.ReLU) or getattr(module, "relucut_site", False)


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

"""The module that stands at a ReLU call site once a plan decides its fate."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("relu", "identity", "mask")
# what a position without a ReLU computes: itself, or a learned per-channel c2*x^2 + c1*x + c0
LINEARIZE = ("identity", "poly2")
POLY_KIND = "poly2"  # the counted kind of those polynomial positions (one secret square each)


def check_poly(poly: torch.Tensor, where: str = "polynomial") -> torch.Tensor:
    """``poly`` as a float32 CPU tensor of shape (3, C): rows c0, c1, c2, one column per channel."""
    poly = torch.as_tensor(poly).detach().to("cpu", torch.float32).clone()  # its own: loading weights writes in place
    if poly.dim() != 2 or poly.shape[0] != 3 or poly.shape[1] < 1:
        raise ValueError(f"{where}: coefficients must have shape (3, channels), got {tuple(poly.shape)}")
    if not bool(torch.isfinite(poly).all()):
        raise ValueError(f"{where}: coefficients must be finite")
    return poly


def poly2(x: torch.Tensor, poly: torch.Tensor) -> torch.Tensor:
    """c0 + x * (c1 + c2 * x) per channel (dim 1 of ``x``); ``poly`` is (3, C)."""
    c = poly.to(x.dtype).reshape(3, -1, *([1] * (x.dim() - 2)))
    return c[0] + x * (c[1] + c[2] * x)


class ReLUSite(nn.Module):
    """A ReLU call site: ``relu`` (kept), ``identity`` (dropped), or ``mask``.

    In ``mask`` mode only positions where the boolean mask is set go through a ReLU; the mask
    broadcasts over the per-sample activation (C,H,W) and may be per channel (C,1,1). With
    ``poly`` (3, C: c0, c1, c2 per channel) the positions without a ReLU compute
    c2*x^2 + c1*x + c0 instead of passing x through (polynomial linearization, AutoReP).
    Subclasses (e.g. learnable masks) override ``forward``, ``active_relus`` and ``coefficients``.
    """

    relucut_site = True  # marks a leaf that fx tracing and counting treat as one ReLU site
    site_kind = "relu"  # the non-linearity it stands for: what counting prices per active element

    def __init__(self, mode: str = "relu", mask: torch.Tensor | None = None, poly: torch.Tensor | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (mode == "mask") != (mask is not None):
            raise ValueError("a mask is given exactly when mode is 'mask'")
        if poly is not None and mode == "relu":
            raise ValueError("a kept site has no polynomial: every position is a ReLU")
        self.mode = mode
        # copies: loading a state_dict writes into buffers in place, and must not change a plan's tensors
        self.register_buffer("mask", None if mask is None else mask.to(torch.bool).clone())
        self.register_buffer("poly", None if poly is None else check_poly(poly))

    def coefficients(self) -> torch.Tensor | None:
        """The (3, C) polynomial of the positions without a ReLU; None: they pass x through."""
        return self.poly

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "relu":
            return self.activation(x)
        poly = self.coefficients()
        other = x if poly is None else poly2(x, poly)
        if self.mode == "identity":
            return other
        return torch.where(self.mask, self.activation(x), other)

    def active_relus(self, shape: tuple[int, ...]) -> int:
        """ReLUs evaluated per input of per-sample ``shape`` (C,H,W): what private inference pays."""
        if self.mode == "relu":
            return math.prod(shape)
        if self.mode == "identity":
            return 0
        return int(torch.broadcast_to(self.mask, tuple(shape)).sum())

    def poly_elements(self, shape: tuple[int, ...]) -> int:
        """Positions computing the polynomial per input (0 without one): one secret square each."""
        return 0 if self.coefficients() is None else math.prod(shape) - self.active_relus(shape)

    def extra_repr(self) -> str:
        poly = "" if self.coefficients() is None else ", poly2"
        if self.mode == "mask":
            return f"mode=mask, ones={int(self.mask.sum())}/{self.mask.numel()}{poly}"
        return f"mode={self.mode}{poly}"


class ReLU6Site(ReLUSite):
    """A ReLU6 call site (``min(max(x, 0), 6)``: two comparisons per element), kept or masked.

    A dropped ReLU6 is a plain ``ReLUSite("identity")``: identity is identity, and the export then
    removes it like any dropped site.
    """

    site_kind = "relu6"

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


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
    into the per-sample (C,H,W) activation. With ``poly`` (3, C) the other positions are gathered
    too and compute their channel's c2*x^2 + c1*x + c0: exactly that many squares, no more.
    """

    relucut_site = True

    def __init__(self, index: torch.Tensor, shape: tuple[int, ...], poly: torch.Tensor | None = None):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.register_buffer("index", index.to(torch.long).flatten())
        self.register_buffer("poly", None if poly is None else check_poly(poly))
        rest = torch.ones(math.prod(self.shape), dtype=torch.bool)
        rest[self.index.cpu()] = False
        rest = rest.nonzero().flatten() if poly is not None else torch.zeros(0, dtype=torch.long)
        if poly is not None and self.poly.shape[1] != self.shape[0]:
            raise ValueError(f"{self.poly.shape[1]} polynomial channels for a site of {self.shape[0]} channels")
        # derived from index and shape: not saved, rebuilt wherever the module is made
        self.register_buffer("rest", rest.to(self.index.device), persistent=False)
        self.register_buffer("rest_channel", self.rest // max(1, math.prod(self.shape[1:])), persistent=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, shape: tuple[int, ...], poly: torch.Tensor | None = None) -> PartialReLU:
        full = torch.broadcast_to(mask.to(torch.bool), tuple(shape)).flatten()
        return cls(full.nonzero().flatten(), shape, poly)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        active = F.relu(flat.index_select(1, self.index))
        out = flat.index_copy(1, self.index, active)
        if self.poly is not None and self.rest.numel():
            c = self.poly.to(x.dtype)[:, self.rest_channel]
            other = flat.index_select(1, self.rest)
            out = out.index_copy(1, self.rest, c[0] + other * (c[1] + c[2] * other))
        return out.view_as(x)

    def coefficients(self) -> torch.Tensor | None:
        return self.poly

    def active_relus(self, shape: tuple[int, ...]) -> int:
        return int(self.index.numel())

    def poly_elements(self, shape: tuple[int, ...]) -> int:
        return int(self.rest.numel())

    def extra_repr(self) -> str:
        poly = f", poly2={self.rest.numel()}" if self.poly is not None else ""
        return f"relus={self.index.numel()}/{math.prod(self.shape)}{poly}"

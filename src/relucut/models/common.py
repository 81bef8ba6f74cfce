"""Pieces shared by the zoo: input resolution scaling, width scaling, argument checks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from relucut.errors import RelucutError


class InputResize(nn.Module):
    """Down-scales the input by ``rho`` (DeepReDuce's feature-map scaling); identity at 1.

    Resizing is linear, so in private inference it costs no ReLU; the client may even do it
    before encrypting.
    """

    def __init__(self, rho: float = 1.0):
        super().__init__()
        self.rho = check_rho(rho)
        inverse = 1.0 / self.rho
        self.pool = round(inverse) if math.isclose(inverse, round(inverse)) else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rho == 1.0:
            return x
        if self.pool:  # exact average pooling when 1/rho is an integer
            return F.avg_pool2d(x, self.pool, ceil_mode=True)
        return F.interpolate(x, scale_factor=self.rho, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"rho={self.rho}"


def check_rho(rho: float) -> float:
    rho = float(rho)
    if not 0.0 < rho <= 1.0:
        raise RelucutError(f"rho must be in (0, 1] (it down-scales the input), got {rho}")
    return rho


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha <= 16.0:
        raise RelucutError(f"alpha must be in (0, 16] (it scales every channel count), got {alpha}")
    return alpha


def scale_width(width: int, alpha: float) -> int:
    return max(1, int(round(width * alpha)))


def check_ints(name: str, values: Sequence[int] | None, length: int) -> tuple[int, ...] | None:
    """Validates a per-stage integer list such as ``widths`` or ``blocks``."""
    if values is None:
        return None
    values = tuple(int(v) for v in values)
    if len(values) != length:
        raise RelucutError(f"{name} needs {length} values (one per stage), got {len(values)}: {values}")
    if any(v < 1 for v in values):
        raise RelucutError(f"{name} must all be >= 1, got {values}")
    return values


def stage_widths(
    base_width: int,
    multipliers: Sequence[float],
    widths: Sequence[int] | None,
    alpha: float,
) -> tuple[int, ...]:
    """Per-stage widths: explicit ``widths`` or ``base_width`` x multipliers, then scaled by alpha."""
    if int(base_width) < 1:
        raise RelucutError(f"base_width must be >= 1, got {base_width}")
    raw = check_ints("widths", widths, len(multipliers)) or tuple(
        int(round(base_width * m)) for m in multipliers
    )
    alpha = check_alpha(alpha)
    return tuple(scale_width(w, alpha) for w in raw)


class ZooModel(nn.Module):
    """Base of every zoo model: declares its stages so sites can be grouped without guessing.

    ``stage_names`` are the top-level child modules holding ReLUs, in order; ``stage_aliases``
    maps other top-level children (e.g. a final BN-ReLU) onto one of those stages.
    """

    stage_names: tuple[str, ...] = ()
    stage_aliases: dict[str, str] = {}

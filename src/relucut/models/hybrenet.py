"""HybReNets (DeepReShape): ResNet18-style networks with per-stage channel ratios.

``hrn_AxBxCx`` has stage widths (m, A·m, A·B·m, A·B·C·m) and blocks (phi1..phi4), stem width m;
the plain ResNet18 is ``hrn_2x2x2x`` at m=64. Any ``hrn_<r1>x<r2>x...x`` name resolves (one stage
per ratio plus the first); a few from the DeepReShape slides are also listed in the zoo. The
default m is 16, the slides' HybReNet base width (m=64 makes the wide ones huge).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from relucut.errors import RelucutError
from relucut.models.registry import register_family, register_model
from relucut.models.resnet import ResNet, resnet

HRN_PREFIX = "hrn_"
HRN_PATTERN = r"hrn_((?:\d+x)+)"
DEFAULT_BASE_WIDTH = 16
# the slides' baselines (2x2x2x, 4x4x4x, 3x7x2x) and their ReLU-equalized designs
LISTED = ("2x2x2x", "4x4x4x", "3x7x2x", "7x5x2x", "5x5x3x", "6x6x2x", "5x7x2x")


def stage_multipliers(ratios: Sequence[int]) -> tuple[int, ...]:
    """(1, r1, r1·r2, ...): each stage's width over the first stage's."""
    return tuple(math.prod(ratios[:i]) for i in range(len(ratios) + 1))


def hrn_name(ratios: Sequence[int]) -> str:
    return HRN_PREFIX + "".join(f"{r}x" for r in ratios)


def parse_hrn_name(name: str) -> tuple[int, ...]:
    match = re.fullmatch(HRN_PATTERN, name)
    if not match:
        raise RelucutError(
            f"'{name}' is not a HybReNet name; write hrn_AxBxCx with integer ratios, e.g. hrn_5x5x3x "
            "('relucut reshape' finds them; the plain ResNet18 is hrn_2x2x2x)"
        )
    return _ratios(match)


def _ratios(match: re.Match[str]) -> tuple[int, ...]:
    ratios = tuple(int(v) for v in match.group(1).rstrip("x").split("x"))
    if any(r < 1 for r in ratios):
        raise RelucutError(f"HybReNet ratios must be >= 1, got {match.group(0)}")
    return ratios


def hybrenet(
    ratios: Sequence[int],
    *,
    base_width: int = DEFAULT_BASE_WIDTH,
    widths: Sequence[int] | None = None,
    **kw,
) -> ResNet:
    """A HybReNet: basic-block ResNet with stage widths m·(1, r1, r1·r2, ...), two blocks per stage."""
    if widths is not None:
        raise RelucutError(
            f"{hrn_name(ratios)} takes its widths from its name; drop --widths, or use resnet18 --widths"
        )
    n = len(ratios) + 1
    return resnet((2,) * n, ("basic",) * n, base_width=base_width, multipliers=stage_multipliers(ratios), **kw)


def hrn_factory(ratios: Sequence[int]) -> Callable[..., ResNet]:
    ratios = tuple(int(r) for r in ratios)

    def factory(**kw) -> ResNet:
        return hybrenet(ratios, **kw)

    factory.__name__ = hrn_name(ratios)
    widths = ", ".join("m" if w == 1 else f"{w}m" for w in stage_multipliers(ratios))
    factory.__doc__ = f"HybReNet {'x'.join(map(str, ratios))}x (DeepReShape): widths {widths}, m=16 by default."
    return factory


for _name in LISTED:
    register_model(hrn_factory(parse_hrn_name(HRN_PREFIX + _name)))
register_family(HRN_PATTERN, lambda match: hrn_factory(_ratios(match)))

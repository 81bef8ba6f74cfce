"""Quantities with units as users write them on the command line: bandwidths and durations.

Every quantity names its unit ('0.3ms', '100mbit'); a bare number is refused, never guessed.
"""

from __future__ import annotations

import re

from relucut.errors import RelucutError

BITS_PER_S = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_QUANTITY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*")


def parse_quantity(text: str, units: dict[str, float], option: str, example: str, *,
                   unit_required: bool = True) -> float:
    """'100mbit' -> 1e8 with ``BITS_PER_S``. The unit is required: a bare '10' could mean 10 s or 10 ms
    (or 10 bit/s or 10 Mbit/s), so it is refused; ``unit_required=False`` reads it in the base unit."""
    m = _QUANTITY.fullmatch(str(text).lower())
    if not m or (m.group(2) and m.group(2) not in units) or (unit_required and not m.group(2)):
        raise RelucutError(f"{option} takes a number with a unit ({', '.join(units)}), e.g. {example}; got '{text}'")
    return float(m.group(1)) * units.get(m.group(2) or "", 1.0)


def parse_durations(text: str, option: str, example: str = "1.5s") -> list[float]:
    """Comma-separated positive durations in seconds, each with its unit: '800ms,2s' -> [0.8, 2.0]."""
    if not str(text).strip():
        raise RelucutError(f"{option} is empty; give a duration like {example}")
    out = [parse_quantity(part, SECONDS, option, example, unit_required=True) for part in str(text).split(",")]
    if any(v <= 0 for v in out):
        raise RelucutError(f"{option} must be above 0 s, got '{text}'")
    return out

"""ReLU equalization (DeepReShape): integer channel ratios that put the stages' ReLUs in criticality order.

A HybReNet stage i (0-based) has phi_i basic blocks (two ReLU layers each) of width m·r_1···r_i at
resolution HW/4^i, so its ReLUs are m·HW/4^(n-1) times the integer

    units_i = 2·phi_i · r_1···r_i · 4^(n-1-i)

(the slides' phi3·ab/16 > phi2·a/4 > phi4·abg/64 > phi1 for the order S3 > S2 > S4 > S1, scaled to
integers). The stem adds one ReLU layer of width m at full resolution, 4^(n-1) units, which the
slides fold into Stage1 when they report the distribution but leave out of the inequalities.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from relucut.errors import RelucutError


@dataclass(frozen=True)
class Design:
    ratios: tuple[int, ...]  # (alpha, beta, gamma, ...): width ratios between consecutive stages
    units: tuple[int, ...]  # per-stage ReLUs in units of m·HW/4^(n-1), stem not included

    @property
    def name(self) -> str:
        return "".join(f"{r}x" for r in self.ratios)


def parse_order(text: str | Sequence[str], n_stages: int) -> tuple[int, ...]:
    """'s3,s2,s4,s1' (most -> least critical) -> 0-based stage indices (2, 1, 3, 0)."""
    names = [v.strip().lower() for v in text.split(",")] if isinstance(text, str) else [v.lower() for v in text]
    names = [v for v in names if v]
    valid = [f"s{i + 1}" for i in range(n_stages)]
    unknown = [v for v in names if v not in valid]
    if unknown:
        raise RelucutError(
            f"unknown stage '{unknown[0]}' in the order; name each of {','.join(valid)} once, "
            "most critical first (e.g. s3,s2,s4,s1)"
        )
    if sorted(names) != sorted(valid):
        raise RelucutError(
            f"the order must name each of {','.join(valid)} exactly once, most critical first; got {','.join(names)}"
        )
    return tuple(valid.index(v) for v in names)


def stage_units(ratios: Sequence[int], blocks: Sequence[int], stem_in_s1: bool = False) -> tuple[int, ...]:
    n = len(blocks)
    if len(ratios) != n - 1:
        raise RelucutError(f"{n} stages need {n - 1} ratios, got {len(ratios)}")
    units = [2 * phi * math.prod(ratios[:i]) * 4 ** (n - 1 - i) for i, phi in enumerate(blocks)]
    if stem_in_s1:
        units[0] += 4 ** (n - 1)
    return tuple(units)


def satisfies(units: Sequence[int], order: Sequence[int]) -> bool:
    """Strictly more ReLUs in each stage than in the next one of the order."""
    return all(units[a] > units[b] for a, b in zip(order, order[1:]))


def check_ratio_range(min_ratio: int, max_ratio: int) -> None:
    if min_ratio < 1 or max_ratio < min_ratio:
        raise RelucutError(f"need 1 <= --min-ratio <= --max-ratio, got {min_ratio} and {max_ratio}")


def solve(
    order: Sequence[int],
    blocks: Sequence[int] = (2, 2, 2, 2),
    max_ratio: int = 8,
    min_ratio: int = 1,
    stem_in_s1: bool = False,
) -> list[Design]:
    """Every (beta, gamma, ...) in [min_ratio, max_ratio] with the smallest alpha that meets ``order``.

    The smallest alpha is the design with the fewest MACs for those later ratios. Sorted by ratios.
    """
    n = len(blocks)
    check_ratio_range(min_ratio, max_ratio)
    if n < 2:
        raise RelucutError(f"ReLU equalization needs at least two stages, got blocks {tuple(blocks)}")
    if sorted(order) != list(range(n)):
        raise RelucutError(f"the order must rank all {n} stages once (one per --blocks entry), got {len(order)}")
    span = range(min_ratio, max_ratio + 1)
    designs = []
    for tail in itertools.product(span, repeat=n - 2):
        for alpha in span:
            units = stage_units((alpha, *tail), blocks, stem_in_s1)
            if satisfies(units, order):
                designs.append(Design((alpha, *tail), units))
                break
    if not designs:
        stages = " > ".join(f"S{i + 1}" for i in order)
        raise RelucutError(
            f"no integer ratios in [{min_ratio}, {max_ratio}] give {stages} with blocks "
            f"{','.join(map(str, blocks))}; raise --max-ratio, lower --min-ratio, or change --blocks"
        )
    return sorted(designs, key=lambda d: d.ratios)


def stage_share(units: Sequence[int], stage: int) -> float:
    return units[stage] / sum(units)


def least_critical_heavy(
    order: Sequence[int],
    blocks: Sequence[int] = (2, 2, 2, 2),
    max_ratio: int = 8,
    min_ratio: int = 2,
) -> Design:
    """The capacity–criticality allocation for low budgets: ratios that keep the critical stages
    (all but the last of ``order``) in order and give the least-critical stage the largest share
    of the ReLUs (stem counted with s1), so culling it removes the most. Ties: fewer channels.
    Ratios start at 2 by default: no stage narrower than ResNet18's doubling, or a ratio of 1 would
    win by starving the stage after the least-critical one of channels."""
    n = len(blocks)
    check_ratio_range(min_ratio, max_ratio)
    least = order[-1]
    best: tuple[tuple[float, int], Design] | None = None
    for ratios in itertools.product(range(min_ratio, max_ratio + 1), repeat=n - 1):
        units = stage_units(ratios, blocks)
        if not satisfies(units, order[:-1]):
            continue
        with_stem = stage_units(ratios, blocks, stem_in_s1=True)
        key = (-stage_share(with_stem, least), sum(math.prod(ratios[:i]) for i in range(1, n)))
        if best is None or key < best[0]:
            best = (key, Design(tuple(ratios), units))
    if best is None:
        raise RelucutError(
            f"no integer ratios in [{min_ratio}, {max_ratio}] keep the critical stages in order; raise --max-ratio"
        )
    return best[1]

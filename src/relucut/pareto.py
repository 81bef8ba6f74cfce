"""Frontier points: one trained network each, and the Pareto set of cost against validation accuracy.

One point type for every frontier relucut draws: DeepReDuce's own (its candidates), and the
cross-method frontier (every method's networks, priced under an engine). Accuracies are fractions
in [0, 1]; only a network chosen for a budget carries a test accuracy there (the test split is
read once per budget, never to choose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class FrontierPoint:
    method: str  # deepreduce, snl, snl-channel, senet, senet-shallow, deepreshape, teacher, ...
    name: str  # unique within its frontier: the method and what it is (candidate name, budget)
    plan: str  # the network in words (culled/thinned stages, budget, design)
    relus: int
    val_acc: float
    macs: int = 0
    relu_layers: int = 0
    conv_depth: int = 0
    params: int = 0
    run_dir: str = ""  # relative to the frontier folder
    export_dir: str = ""
    budget: int | None = None  # the ReLU budget a masked network was trained to (None: a coarse point)
    online_s: float = math.nan  # estimated under the engine (nan: not estimated)
    total_s: float = math.nan
    online_bytes: float = math.nan
    total_bytes: float = math.nan
    rounds: int = 0
    unpriced: dict[str, int] = field(default_factory=dict)  # kinds the engine has no price for: costs are lower bounds
    test_acc: float | None = None
    chosen_for: list[float] = field(default_factory=list)  # budgets this one is the pick of
    on_frontier: bool = False
    measured: dict[str, Any] | None = None  # SPU measurement of the export, where run
    details: dict[str, Any] = field(default_factory=dict)  # what the method records of it (a candidate's edits)

    def cost(self, key: str) -> float:
        return float(getattr(self, key))

    def priced(self, key: str) -> bool:
        return not math.isnan(self.cost(key))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierPoint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, accuracy) that no other point dominates.

    A point dominates another when it costs no more and is no less accurate, and is strictly
    better in one of the two. Equal points do not dominate each other, so both stay.
    """
    keep = []
    for i, (cost_i, acc_i) in enumerate(points):
        dominated = any(
            cost_j <= cost_i and acc_j >= acc_i and (cost_j < cost_i or acc_j > acc_i)
            for j, (cost_j, acc_j) in enumerate(points) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


def undominated(points: Sequence[FrontierPoint], key: str = "relus") -> list[FrontierPoint]:
    """The points no other point dominates on (cost ``key``, validation accuracy), most costly
    first; points without that cost (not estimated) are left out."""
    known = [p for p in points if p.priced(key)]
    keep = pareto_indices([(p.cost(key), p.val_acc) for p in known])
    return sorted((known[i] for i in keep), key=lambda p: (-p.cost(key), -p.val_acc, p.name))


def mark(points: Sequence[FrontierPoint], key: str = "relus") -> list[FrontierPoint]:
    """Sets ``on_frontier`` on every point and returns the frontier, most costly first."""
    front = undominated(points, key)
    names = {p.name for p in front}
    for p in points:
        p.on_frontier = p.name in names
    return front


def best_within(points: Sequence[FrontierPoint], budget: float, key: str = "relus") -> FrontierPoint | None:
    """The most accurate point (validation) whose cost is within ``budget``; ties go to the cheaper."""
    fits = [p for p in points if p.priced(key) and p.cost(key) <= budget]
    return max(fits, key=lambda p: (p.val_acc, -p.cost(key), p.name), default=None)


__all__ = ["FrontierPoint", "best_within", "mark", "pareto_indices", "undominated"]

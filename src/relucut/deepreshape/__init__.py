"""DeepReShape: ReLU equalization of HybReNets and the capacity–criticality trade-off."""

from relucut.deepreshape.describe import describe, distribution, fold_stem
from relucut.deepreshape.equalize import Design, least_critical_heavy, parse_order, satisfies, solve, stage_units

__all__ = [
    "Design",
    "describe",
    "distribution",
    "fold_stem",
    "least_critical_heavy",
    "parse_order",
    "satisfies",
    "solve",
    "stage_units",
]

"""The cross-method frontier: ``relucut.frontier(spec, FrontierConfig(budgets=[...]), data=, out=)``."""

from relucut.frontier_search.config import FrontierConfig
from relucut.frontier_search.run import FrontierResult, frontier
from relucut.pareto import FrontierPoint, undominated

__all__ = ["FrontierConfig", "FrontierPoint", "FrontierResult", "frontier", "undominated"]

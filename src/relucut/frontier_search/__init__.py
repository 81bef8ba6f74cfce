"""The cross-method frontier: ``relucut.frontier(spec, FrontierConfig(budgets=[...]), data=, out=)``."""

from relucut.frontier_search.config import METHODS, FrontierConfig
from relucut.frontier_search.points import FrontierPoint, undominated
from relucut.frontier_search.run import FrontierResult, frontier

__all__ = ["METHODS", "FrontierConfig", "FrontierPoint", "FrontierResult", "frontier", "undominated"]

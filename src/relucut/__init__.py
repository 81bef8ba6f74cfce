"""relucut: design neural networks with few ReLUs for fast private inference."""

from relucut.cost import CostReport, count
from relucut.errors import RelucutError
from relucut.models import ModelSpec, create_model, list_models, register_model
from relucut.plan import ReLUPlan, SiteDecision, apply_plan, apply_plan_
from relucut.reduce import ReduceResult, reduce
from relucut.site_module import PartialReLU, ReLUSite
from relucut.sites import Site, SiteMap, find_sites, sitify, trace

__version__ = "0.1.0"

__all__ = [
    "CostReport",
    "ModelSpec",
    "ReLUPlan",
    "PartialReLU",
    "ReLUSite",
    "ReduceResult",
    "RelucutError",
    "Site",
    "SiteDecision",
    "SiteMap",
    "apply_plan",
    "apply_plan_",
    "count",
    "create_model",
    "find_sites",
    "list_models",
    "reduce",
    "register_model",
    "sitify",
    "trace",
]

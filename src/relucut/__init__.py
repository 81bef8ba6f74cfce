"""relucut: design neural networks with few ReLUs for fast private inference."""

import importlib
import sys
import types

from relucut.errors import RelucutError

# Public names and the modules that define them, imported on first use: `import relucut` (and so
# `relucut --help`) must not pay for torch. A new public name goes here, not in an import above
# (tests/test_cli_startup.py fails when start-up imports torch).
_LAZY = {
    "CostReport": "relucut.cost", "count": "relucut.cost",
    "ModelSpec": "relucut.models", "create_model": "relucut.models", "list_models": "relucut.models",
    "register_model": "relucut.models",
    "ReLUPlan": "relucut.plan", "SiteDecision": "relucut.plan", "apply_plan": "relucut.plan",
    "apply_plan_": "relucut.plan",
    "ReduceResult": "relucut.reduce", "reduce": "relucut.reduce",
    "PartialReLU": "relucut.site_module", "ReLUSite": "relucut.site_module",
    "Site": "relucut.sites", "SiteMap": "relucut.sites", "find_sites": "relucut.sites", "sitify": "relucut.sites",
    "trace": "relucut.sites",
    "SENetConfig": "relucut.methods.senet", "SNLConfig": "relucut.methods.snl",
    "DeepReDuceConfig": "relucut.methods.deepreduce", "DeepReShapeConfig": "relucut.methods.deepreshape",
    "MethodConfig": "relucut.methods", "MethodResult": "relucut.methods", "list_methods": "relucut.methods",
    "get_method": "relucut.methods",
    "FrontierConfig": "relucut.frontier_search", "FrontierResult": "relucut.frontier_search",
    "frontier": "relucut.frontier_search",
}
# submodules the README uses as attributes after ``import relucut`` (relucut.pi.estimate, ...)
_SUBMODULES = ("pi", "export", "methods", "train", "data")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"relucut.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'relucut' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    # importing the submodule relucut.reduce binds it as the package's attribute `reduce`; the
    # public name is the function, so a module is not bound over a public name and __getattr__
    # resolves it from _LAZY, as when this module imported the functions eagerly
    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "CostReport",
    "DeepReDuceConfig",
    "DeepReShapeConfig",
    "FrontierConfig",
    "FrontierResult",
    "MethodConfig",
    "MethodResult",
    "ModelSpec",
    "ReLUPlan",
    "PartialReLU",
    "ReLUSite",
    "ReduceResult",
    "RelucutError",
    "SENetConfig",
    "SNLConfig",
    "Site",
    "SiteDecision",
    "SiteMap",
    "apply_plan",
    "apply_plan_",
    "count",
    "create_model",
    "find_sites",
    "frontier",
    "get_method",
    "list_methods",
    "list_models",
    "reduce",
    "register_model",
    "sitify",
    "trace",
]

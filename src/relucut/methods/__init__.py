"""Methods: one registered module each (its config, how it runs, which frontier points it yields).

``relucut.reduce``, ``relucut.frontier`` and the CLI loop over this registry::

    from relucut.methods import get_method, list_methods
    list_methods()                        # ['deepreduce', 'deepreshape', 'snl', 'senet']
    method = get_method("snl")            # its config class, run function, frontier variants
    result = method.run(method.config(budget=25_000), ctx)   # a MethodResult

A method module (``relucut/methods/<name>.py``) defines a ``MethodConfig`` dataclass and registers
its run function with ``@register_method``; nothing else in relucut names it.
"""

from relucut.methods._config import MethodConfig, need, setting
from relucut.methods._context import EXPORT_DIR, RESULT_FILE, FrontierStep, MethodContext, MethodResult, per_budget_steps, read_result
from relucut.methods._registry import (
    Method,
    frontier_entries,
    get_method,
    list_methods,
    method_of,
    methods,
    register_method,
)

__all__ = [
    "EXPORT_DIR", "RESULT_FILE", "FrontierStep", "Method", "MethodConfig", "MethodContext", "MethodResult", "frontier_entries", "get_method",
    "list_methods", "method_of", "methods", "need", "per_budget_steps", "read_result", "register_method", "setting",
]

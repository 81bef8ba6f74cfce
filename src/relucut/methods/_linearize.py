"""What a mask method's positions without a ReLU compute (``linearize``): the setting SNL, SENet and
ReLUPruner share, the frontier entry it names and its frontier steps."""

from __future__ import annotations

from relucut.methods._config import setting

# relucut.site_module.LINEARIZE, spelled here too: the configs (and `relucut --help`) import no torch
LINEARIZE = ("identity", "poly2")


def linearize_setting():
    """The ``linearize`` field of a mask method's config."""
    return setting("identity", help="What a position without a ReLU computes: identity, or poly2 (a learned "
                                    "per-channel c2*x^2 + c1*x + c0, AutoReP; one secret square each, priced per "
                                    "engine).", choices=LINEARIZE)


def linearized(entry: str, config) -> str:
    """``entry`` with ``-poly2`` where the config's linearized positions compute a polynomial."""
    return entry if config.linearize == "identity" else f"{entry}-{config.linearize}"


def linearized_frontier(name: str):
    """A method's frontier steps (one run per budget), whose ReLU budgets under a latency budget pay
    for the polynomial positions its linearization leaves (``relucut.frontier_search.pricing``)."""
    def steps(entry: str, template, fr) -> list:
        from relucut.frontier_search.pricing import mask_budgets
        from relucut.methods._context import per_budget_steps
        from relucut.methods._registry import get_method

        return per_budget_steps(get_method(name), entry, template, fr, budgets=mask_budgets(fr, template.linearize))
    return steps


__all__ = ["LINEARIZE", "linearize_setting", "linearized", "linearized_frontier"]

"""The capacity–criticality trade-off: one HybReNet design per ReLU budget, exact counts <= budget.

High budgets: widen the ReLU-equalized network (raise m) as far as the budget allows, while m stays
at least ``min_width``. Below that: switch to channel ratios that give the least-critical stage the
largest share of the ReLUs (:func:`least_critical_heavy`), then walk DeepReDuce's candidates (cull the
least-critical stages, compounding; then also thin the rest) and take the first that fits the budget
at ``m >= min_width``, i.e. the one keeping the most critical ReLUs with enough capacity. If none
does, the most reduced candidate at the largest m that fits.

Every width is m times an integer, so ReLUs are exactly m times those at m=1: the search counts
each candidate once at m=1 and the chosen design is counted again at its m.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from relucut.cost import count
from relucut.deepreduce.candidates import generate_candidates
from relucut.deepreshape.describe import distribution
from relucut.deepreshape.equalize import least_critical_heavy
from relucut.errors import RelucutError
from relucut.models.hybrenet import hrn_name
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan
from relucut.sites import SiteMap, find_sites

COARSE_STEPS = ("culled", "thinned")  # m is the channel knob here, so DeepReDuce's alpha/rho steps are left out


@dataclass(frozen=True)
class BudgetDesign:
    budget: int
    regime: str  # "widen" (equalized network, larger m) or "cull" (least-critical-heavy + DeepReDuce)
    model: str
    base_width: int
    blocks: tuple[int, ...]
    culled: tuple[str, ...]
    thinned: tuple[str, ...]
    relus: int
    macs: int
    distribution: dict[str, float]  # of the ReLUs kept, stem inside s1

    def spec(self, num_classes: int, input_size: tuple[int, int, int]) -> ModelSpec:
        return ModelSpec(self.model, num_classes, input_size[0], input_size[1],
                         {"base_width": self.base_width, "blocks": list(self.blocks)})

    def plan(self, num_classes: int, input_size: tuple[int, int, int]) -> ReLUPlan:
        if not (self.culled or self.thinned):
            return ReLUPlan()
        sites = find_sites(self.spec(num_classes, input_size).build(), input_size)
        return ReLUPlan.deepreduce(sites, cull=self.culled, thin=self.thinned)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # lists, as read back from result.json


@functools.lru_cache(maxsize=64)
def _unit_sites(ratios: tuple[int, ...], blocks: tuple[int, ...], input_size: tuple[int, int, int]) -> SiteMap:
    spec = ModelSpec(hrn_name(ratios), 10, input_size[0], input_size[1], {"base_width": 1, "blocks": list(blocks)})
    return find_sites(spec.build(), input_size)


def _per_width(ratios: Sequence[int], blocks: Sequence[int], input_size, cull=(), thin=()) -> int:
    """ReLUs at m=1 under the given culling/thinning."""
    sites = _unit_sites(tuple(ratios), tuple(blocks), tuple(input_size))
    return ReLUPlan.deepreduce(sites, cull=cull, thin=thin).count(sites)


def _final(budget: int, regime: str, ratios, blocks, m: int, cull, thin, input_size, num_classes) -> BudgetDesign:
    spec = ModelSpec(hrn_name(ratios), num_classes, input_size[0], input_size[1],
                     {"base_width": m, "blocks": list(blocks)})
    net = spec.build()
    plan = ReLUPlan.deepreduce(find_sites(net, input_size), cull=cull, thin=thin)
    report = count(net, input_size, plan=plan)
    if report.relus > budget:  # cannot happen while widths are m times integers; guards that assumption
        raise RelucutError(f"design {spec.name} m={m} has {report.relus} ReLUs, over the budget {budget}")
    return BudgetDesign(budget, regime, spec.name, m, tuple(blocks), tuple(cull), tuple(thin),
                        report.relus, report.macs, distribution(report.relus_by_stage))


def design_for_budget(
    budget: int,
    equalized: Sequence[int],
    order: Sequence[int],
    blocks: Sequence[int] = (2, 2, 2, 2),
    input_size: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    min_width: int = 16,
    low_budget_ratios: Sequence[int] | None = None,
) -> BudgetDesign:
    """The design for one budget. ``equalized``: the ReLU-equalized ratios (e.g. 5,5,3); ``order``:
    0-based stage indices from most to least critical; ``low_budget_ratios``: ratios for the cull
    regime (default: the least-critical-heavy allocation for ``order``)."""
    if budget < 1 or min_width < 1:
        raise RelucutError(f"budget and min width must be >= 1, got {budget} and {min_width}")
    blocks = tuple(blocks)
    if sorted(order) != list(range(len(blocks))):
        raise RelucutError(f"the order must rank each of the {len(blocks)} stages once, got {tuple(order)}")
    widen_m = budget // _per_width(equalized, blocks, input_size)
    if widen_m >= min_width:
        return _final(budget, "widen", equalized, blocks, widen_m, (), (), input_size, num_classes)
    ratios = tuple(low_budget_ratios or least_critical_heavy(order, blocks).ratios)
    stages = [f"s{i + 1}" for i in range(len(blocks))]
    least_to_most = [stages[i] for i in reversed(order)]
    candidates = [c for c in generate_candidates(least_to_most, ["stem", *stages]) if c.step in COARSE_STEPS]
    for cand in candidates:
        m = budget // _per_width(ratios, blocks, input_size, cand.culled, cand.thinned)
        if m >= min_width or cand is candidates[-1]:
            if m < 1:
                raise RelucutError(
                    f"budget {budget:,} is below the smallest design ({hrn_name(ratios)} m=1, {cand.label()}); "
                    "raise the budget"
                )
            return _final(budget, "cull", ratios, blocks, m, cand.culled, cand.thinned, input_size, num_classes)
    raise AssertionError("unreachable: the last candidate always returns")

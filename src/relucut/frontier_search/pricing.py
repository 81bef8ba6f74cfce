"""What a frontier point costs under the user's engine: the ``relucut.pi`` estimate of its export."""

from __future__ import annotations

import dataclasses

from relucut.cost import CostReport
from relucut.errors import RelucutError
from relucut.frontier_search.config import FrontierConfig
from relucut.pi import Estimate, Workload, estimate


def price(report: CostReport | Workload, config: FrontierConfig) -> Estimate:
    return estimate(report, config.engine, bandwidth_bps=config.bandwidth_bps, rtt_s=config.rtt_s,
                    threads=config.threads)


def rounds(est: Estimate) -> int:
    """Online communication rounds: each comparing layer (and, under SPU, each linear layer) waits on the network."""
    return int(round(est.online_rounds))


POLY_KIND = "poly2"  # relucut.site_module.POLY_KIND: the kind a polynomial position is counted as


def masked(work: Workload, relus: int, full: int, sites: int, linearize: str = "identity") -> Workload:
    """``work`` (the full network's) with ``relus`` of its ``full`` ReLUs kept by a mask method: the
    others pass x through (``identity``: free) or each compute a polynomial (``poly2``: an element
    of that kind, in every one of the ``sites`` layers)."""
    if linearize == "identity" or relus >= full:
        return dataclasses.replace(work, relus=relus)
    return dataclasses.replace(work, relus=relus, smooth={**work.smooth, POLY_KIND: full - relus},
                               smooth_layers={**work.smooth_layers, POLY_KIND: sites})


def relu_budget_for_latency(report: CostReport, latency_s: float, config: FrontierConfig,
                            linearize: str = "identity") -> int | None:
    """The most ReLUs the masked methods may keep in ``report``'s network (its MACs and ReLU layers
    unchanged) so that its estimated online latency stays within ``latency_s``; None when even
    no ReLUs at all would not fit. With ``linearize="poly2"`` every position without a ReLU pays
    for its polynomial, so the budget is what is left after them (an engine without a price for
    polynomials treats them as free, and says so where the network is priced)."""
    work = Workload.of(report)

    def fits(relus: int) -> bool:
        workload = masked(work, relus, report.relus, len(report.sites), linearize)
        return price(workload, config).online_s <= latency_s

    if not fits(1):
        return None
    low, high = 1, max(1, work.relus)
    if fits(high):
        return high
    while high - low > 1:  # fits(low) and not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def mask_budgets(fr, linearize: str = "identity") -> list[int]:
    """The masked methods' ReLU budgets of a frontier run ``fr`` (``FrontierRun``) for a method whose
    linearized positions compute ``linearize``: at ReLU budgets the budgets themselves; at latency
    budgets the ReLUs that fit once the polynomial positions are paid for too."""
    if not fr.latency or linearize == "identity":
        return fr.mask_budgets()
    budgets = (relu_budget_for_latency(fr.full, latency, fr.config, linearize) for latency in fr.config.budget_list())
    return sorted({b for b in budgets if b is not None and b < fr.full.relus})


def check_latency_budgets(report: CostReport, config: FrontierConfig,
                          smaller: list[CostReport] = ()) -> dict[float, int | None]:
    """ReLU budgets of the masked methods (on ``report``'s network) per latency budget; refuses a
    budget that neither it nor any of the ``smaller`` networks (reshaped candidates) can reach."""
    floor = min(price(dataclasses.replace(Workload.of(r), relus=1), config).online_s for r in [report, *smaller])
    out = {}
    for latency in config.budget_list():
        out[latency] = relu_budget_for_latency(report, latency, config)
        if latency < floor:
            raise RelucutError(f"no network can reach a latency budget of {latency:g} s under {config.engine}: "
                               f"the cheapest network's linear layers alone take about {floor:.3g} s online; "
                               "raise --latency-budget or pick a faster --engine/--bandwidth")
    return out

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


def relu_budget_for_latency(report: CostReport, latency_s: float, config: FrontierConfig) -> int | None:
    """The most ReLUs the masked methods may keep in ``report``'s network (its MACs and ReLU layers
    unchanged) so that its estimated online latency stays within ``latency_s``; None when even
    no ReLUs at all would not fit."""
    work = Workload.of(report)

    def fits(relus: int) -> bool:
        return price(dataclasses.replace(work, relus=relus), config).online_s <= latency_s

    if not fits(1):
        return None
    low, high = 1, max(1, work.relus)
    if fits(high):
        return high
    while high - low > 1:  # fits(low) and not fits(high)
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


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

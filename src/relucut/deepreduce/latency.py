"""The frontier's "estimated PI latency" column: online seconds from relucut's PI cost model."""

from __future__ import annotations

from relucut.cost import CostReport

LATENCY_PROFILE = "delphi"  # the protocol DeepReDuce's Table 4 latencies were measured with


def estimate_latency_s(report: CostReport, profile: str = LATENCY_PROFILE) -> float | None:
    """Estimated online latency of one private inference, or None without the cost model."""
    try:
        from relucut.pi import estimate
    except ImportError:  # the PI cost model is not part of this installation
        return None
    return float(estimate(report, profile).online_s)

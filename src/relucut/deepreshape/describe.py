"""What a HybReNet design costs, reported the slides' way (stem counted inside Stage1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relucut.cost import count
from relucut.models.hybrenet import hrn_name
from relucut.models.registry import create_model


def fold_stem(relus_by_stage: dict[str, int]) -> dict[str, int]:
    """The slides' convention: the stem's ReLUs belong to Stage1."""
    out = {k: v for k, v in relus_by_stage.items() if k != "stem"}
    out["s1"] = out.get("s1", 0) + relus_by_stage.get("stem", 0)
    return out


def distribution(relus_by_stage: dict[str, int]) -> dict[str, float]:
    """Per-stage share of the ReLUs in %, stem inside s1, rounded to 0.01."""
    folded = fold_stem(relus_by_stage)
    total = sum(folded.values()) or 1
    return {stage: round(100 * v / total, 2) for stage, v in folded.items()}


def describe(
    ratios: Sequence[int],
    base_width: int,
    blocks: Sequence[int] | None = None,
    input_size: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 100,
) -> dict[str, Any]:
    """Builds the design and counts it exactly (relucut.count): ReLUs, MACs, params, distribution."""
    kwargs: dict[str, Any] = {"base_width": base_width}
    if blocks is not None:
        kwargs["blocks"] = list(blocks)
    net = create_model(hrn_name(ratios), num_classes=num_classes, in_chans=input_size[0], **kwargs)
    report = count(net, input_size)
    return {
        "model": hrn_name(ratios),
        "ratios": list(ratios),
        "base_width": base_width,
        "blocks": list(blocks) if blocks is not None else None,
        "relus": report.relus,
        "macs": report.macs,
        "params": report.params,
        "relus_by_stage": fold_stem(report.relus_by_stage),
        "distribution": distribution(report.relus_by_stage),
    }

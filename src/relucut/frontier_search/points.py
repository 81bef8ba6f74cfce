"""Frontier points: one trained and exported network each, the undominated set, and the tables.

Accuracies are fractions in [0, 1] in the objects, JSON and CSV; the Markdown shows percent.
Only the network chosen for a budget (best validation accuracy within it) carries a test accuracy:
the test split is read once per budget, never to choose.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from relucut.deepreduce.frontier import pareto_indices


@dataclass
class FrontierPoint:
    method: str  # deepreduce, snl, snl-channel, senet, senet-shallow, deepreshape
    name: str  # unique within the search: method and what it is (candidate name, budget)
    plan: str  # a short description of the network (culled/thinned stages, budget, design)
    relus: int  # of the exported network
    relu_layers: int
    macs: int
    conv_depth: int
    val_acc: float
    run_dir: str  # relative to the frontier folder
    export_dir: str
    budget: int | None = None  # the ReLU budget a masked network was trained to (None: coarse)
    online_s: float = math.nan  # estimated under the engine
    total_s: float = math.nan
    online_bytes: float = math.nan
    total_bytes: float = math.nan
    rounds: int = 0
    test_acc: float | None = None  # only for chosen networks
    chosen_for: list[float] = field(default_factory=list)  # budgets this one is the pick of
    on_frontier: bool = False
    measured: dict[str, Any] | None = None  # SPU measurement of the export, where run

    def cost(self, key: str) -> float:
        return float(getattr(self, key))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontierPoint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def undominated(points: Sequence[FrontierPoint], key: str = "relus") -> list[FrontierPoint]:
    """The points no other point dominates on (cost ``key``, validation accuracy), cheapest last."""
    keep = pareto_indices([(p.cost(key), p.val_acc) for p in points])
    return sorted((points[i] for i in keep), key=lambda p: (-p.cost(key), -p.val_acc, p.name))


def mark(points: Sequence[FrontierPoint], key: str = "relus") -> list[FrontierPoint]:
    """Sets ``on_frontier`` on every point and returns the combined frontier."""
    front = undominated(points, key)
    names = {p.name for p in front}
    for p in points:
        p.on_frontier = p.name in names
    return front


def best_within(points: Sequence[FrontierPoint], budget: float, key: str = "relus") -> FrontierPoint | None:
    """The most accurate point (validation) whose cost is within ``budget``; ties go to the cheaper."""
    fits = [p for p in points if p.cost(key) <= budget]
    return max(fits, key=lambda p: (p.val_acc, -p.cost(key), p.name), default=None)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _budget_text(b: float, key: str) -> str:
    return f"{b:.3g} s" if key != "relus" else f"{int(b):,}"


def markdown(points: Sequence[FrontierPoint], picks: dict[float, FrontierPoint | None], key: str,
             engine: str, title: str = "") -> str:
    """The chosen network per budget, then the combined frontier, then every trained point."""
    lines = [f"# {title}", ""] if title else []
    lines += [f"Chosen on validation accuracy; latency and bytes estimated for `{engine}` (online).", "",
              "| budget | method | network | ReLUs | ReLU layers | MACs | val % | test % | online s | online MB |",
              "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for budget, p in picks.items():
        if p is None:
            lines.append(f"| {_budget_text(budget, key)} | - | nothing fits | | | | | | | |")
            continue
        lines.append(f"| {_budget_text(budget, key)} | {p.method} | {p.plan} | {p.relus:,} | {p.relu_layers} | "
                     f"{p.macs / 1e6:.2f}M | {_pct(p.val_acc)} | {_pct(p.test_acc)} | {p.online_s:.3g} | "
                     f"{p.online_bytes / 1e6:.3g} |")
    lines += ["", "All trained networks (on the combined frontier: *):", "",
              "| | method | network | ReLUs | ReLU layers | MACs | conv depth | val % | online s |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in sorted(points, key=lambda p: (-p.cost(key), -p.val_acc)):
        lines.append(f"| {'*' if p.on_frontier else ''} | {p.method} | {p.plan} | {p.relus:,} | {p.relu_layers} | "
                     f"{p.macs / 1e6:.2f}M | {p.conv_depth} | {_pct(p.val_acc)} | {p.online_s:.3g} |")
    measured = [p for p in points if p.measured]
    if measured:
        lines += ["", f"Measured under SPU (Cheetah, 2 processes on one machine) next to the `{engine}` estimate:", "",
                  "| method | network | ReLUs | estimated online s | measured s | estimated MB | measured MB |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for p in measured:
            m = p.measured
            lines.append(f"| {p.method} | {p.plan} | {p.relus:,} | {p.online_s:.3g} | {m['online_s']:.3g} | "
                         f"{p.online_bytes / 1e6:.3g} | {m['bytes'] / 1e6:.3g} |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("method", "name", "plan", "budget", "relus", "relu_layers", "macs", "conv_depth", "val_acc",
              "test_acc", "online_s", "total_s", "online_bytes", "total_bytes", "rounds", "on_frontier",
              "chosen_for", "export_dir")


def to_csv(points: Sequence[FrontierPoint]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in points:
        row = p.to_dict()
        row["chosen_for"] = ";".join(f"{b:g}" for b in p.chosen_for)
        writer.writerow(row)
    return buf.getvalue()

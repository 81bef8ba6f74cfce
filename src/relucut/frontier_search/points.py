"""The cross-method frontier's tables: the pick per budget, the combined frontier, every point.

Accuracies are fractions in [0, 1] in the objects, JSON and CSV; the Markdown shows percent.
Only the network chosen for a budget (best validation accuracy within it) carries a test accuracy:
the test split is read once per budget, never to choose.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from relucut.pareto import FrontierPoint


def unpriced_line(points: Sequence[FrontierPoint], engine: str) -> str | None:
    """One line when ``engine`` has no price for some kinds these networks evaluate (their latencies
    and bytes are then lower bounds), naming each kind at its most elements; None when all is priced."""
    from relucut.pi import unpriced_line as line

    most: dict[str, int] = {}
    for p in points:
        for kind, n in p.unpriced.items():
            most[kind] = max(most.get(kind, 0), n)
    return line(most, engine)


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

"""DeepReDuce's candidates as frontier points, and the search's tables (JSON, CSV, Markdown).

A candidate is a ``relucut.pareto.FrontierPoint`` whose ``details`` record its edits (iteration,
step, culled and thinned stages, alpha, rho, one-block) and whose ``online_s`` is the estimated
DELPHI online latency. Accuracies are fractions in [0, 1] in the JSON and CSV; Markdown shows percent.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relucut.deepreduce.candidates import STEM, Candidate
from relucut.errors import RelucutError
from relucut.pareto import FrontierPoint, best_within, mark, undominated
from relucut.rundir import atomic_write_json, atomic_write_text

FRONTIER_VERSION = 2  # 2: accuracies as fractions; 1 held percent


def network_label(details: dict[str, Any]) -> str:
    """The paper's naming by the stages that keep ReLUs: ``S2RT+S3RT a0.5``."""
    suffix = ("*" if details["one_block"] else "") + "RT"
    names = [s.upper() + (suffix if s in details["thinned"] else "") for s in details["kept"] if s != STEM]
    extra = [f"a{details['alpha']:g}" if details["alpha"] != 1.0 else "",
             f"r{details['rho']:g}" if details["rho"] != 1.0 else ""]
    return " ".join(p for p in ["+".join(names) or "no ReLUs", *extra] if p)


def candidate_point(candidate: Candidate, relus: int, macs: int, params: int, val_acc: float,
                    test_acc: float | None, est_latency_s: float | None = None, run_dir: str = "",
                    stage_names: Sequence[str] = ()) -> FrontierPoint:
    """A trained candidate: its edits, cost and accuracy."""
    details = {"iteration": candidate.iteration, "step": candidate.step, "culled": list(candidate.culled),
               "thinned": list(candidate.thinned), "alpha": candidate.alpha, "rho": candidate.rho,
               "one_block": candidate.blocks is not None,
               "kept": [s for s in stage_names if s not in candidate.culled]}
    return FrontierPoint(
        method="deepreduce", name=candidate.name, plan=network_label(details), relus=int(relus),
        val_acc=float(val_acc), macs=int(macs), params=int(params), run_dir=run_dir,
        online_s=math.nan if est_latency_s is None else float(est_latency_s),
        test_acc=None if test_acc is None else float(test_acc), details=details)


def acc_per_krelu(p: FrontierPoint) -> float:
    """Validation accuracy (a fraction) per thousand ReLUs."""
    return p.val_acc / (p.relus / 1000.0) if p.relus else math.inf


def latency_s(p: FrontierPoint) -> float | None:
    return p.online_s if p.priced("online_s") else None


def row(p: FrontierPoint) -> dict[str, Any]:
    """A candidate as frontier.json has always listed it."""
    return {"name": p.name, **{k: p.details[k] for k in ("iteration", "step", "culled", "thinned", "alpha", "rho",
                                                          "one_block")},
            "relus": p.relus, "macs": p.macs, "params": p.params, "val_acc": p.val_acc, "test_acc": p.test_acc,
            "est_latency_s": latency_s(p), "run_dir": p.run_dir, "on_frontier": p.on_frontier,
            "kept": p.details["kept"], "acc_per_krelu": acc_per_krelu(p)}


def latency_frontier(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """The candidates no other beats on both estimated PI latency and validation accuracy, fastest
    first (those without an estimate are left out). ReLU layers and MACs cost time too, so this can
    differ from the ReLU frontier."""
    return sorted(undominated(points, "online_s"), key=lambda p: (p.online_s, -p.val_acc))


def best_under_budget(points: Sequence[FrontierPoint], budget: int) -> FrontierPoint:
    """The most accurate (validation) candidate with at most ``budget`` ReLUs."""
    best = best_within(points, budget)
    if best is None:
        smallest = min(p.relus for p in points)
        raise RelucutError(f"no candidate fits a budget of {budget:,} ReLUs; the smallest reachable is "
                           f"{smallest:,} ReLUs; raise --budget to at least that")
    return best


def stages_text(names: Sequence[str], star: bool = False) -> str:
    shown = [n.upper() + ("*" if star else "") for n in names if n != STEM]
    return "+".join(shown) if shown else "NA"


def scale_text(v: float) -> str:
    return "NA" if v == 1.0 else f"{v:g}x"


def ratio_text(v: float) -> str:
    """Three significant digits without switching to exponents: 0.332, 8.69, 1230."""
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def markdown_table(points: Sequence[FrontierPoint], title: str = "") -> str:
    """Rows in the layout of DeepReDuce's Table 4 (the stem ReLU is always culled)."""
    lines = [title, ""] if title else []
    lines += [
        ("| Culled | Thinned | Channel (alpha) | Fmap (rho) | #ReLU | MACs | Val acc (%) | Test acc (%) "
         "| Est. PI latency (s) | Val acc (%) / kReLU |"),
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        d = p.details
        lat = "-" if latency_s(p) is None else f"{p.online_s:.3g}"
        lines.append(
            f"| {stages_text(d['culled'])} | {stages_text(d['thinned'], d['one_block'])} | {scale_text(d['alpha'])} "
            f"| {scale_text(d['rho'])} | {p.relus / 1000:.2f}K | {p.macs / 1e6:.2f}M | {_pct(p.val_acc)} "
            f"| {_pct(p.test_acc)} | {lat} | {ratio_text(100 * acc_per_krelu(p))} |"
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("name", "culled", "thinned", "alpha", "rho", "one_block", "relus", "macs", "params", "val_acc",
               "test_acc", "acc_per_krelu", "est_latency_s", "on_frontier", "run_dir")


def to_csv(points: Sequence[FrontierPoint]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for p in points:
        d = row(p)
        d["culled"], d["thinned"] = "+".join(d["culled"]), "+".join(d["thinned"])
        writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def write_frontier(out: Path, points: list[FrontierPoint], meta: dict[str, Any]) -> list[FrontierPoint]:
    """Marks the ReLU frontier and writes frontier.json (all candidates + frontier), frontier.csv,
    candidates.csv and frontier.md; returns the frontier, most ReLUs first."""
    front = mark(points, "relus")
    by_relus = sorted(points, key=lambda p: (-p.relus, -p.val_acc))
    doc = {"format": "relucut.frontier", "version": FRONTIER_VERSION, **meta,
           "frontier": [row(p) for p in front], "candidates": [row(p) for p in by_relus]}
    atomic_write_json(out / "frontier.json", doc)
    atomic_write_text(out / "frontier.csv", to_csv(front))
    atomic_write_text(out / "candidates.csv", to_csv(by_relus))
    title = meta.get("title", "DeepReDuce frontier")
    md = markdown_table(front, f"## {title}: Pareto frontier (chosen on validation accuracy)")
    md += "\n" + markdown_table(by_relus, "## Every trained candidate")
    atomic_write_text(out / "frontier.md", md)
    return front


def chance_warning(accuracies: Sequence[float | None], num_classes: int, what: str) -> str | None:
    """One warning line when no network learned (every validation accuracy below 1.5x chance):
    then the order of stages and the frontier only rank noise."""
    known = [a for a in accuracies if a is not None]
    if known and max(known) < 1.5 / num_classes:
        return (f"warning: every network is at chance accuracy (best val {100 * max(known):.1f}%, chance "
                f"{100 / num_classes:.1f}%), so {what} noise; train longer (--epochs)")
    return None


def rich_table(rows: Sequence[dict[str, Any]], title: str):
    """frontier.json's rows as a rich table (Table 4's columns)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("Culled", "Thinned", "Channel", "Fmap", "#ReLU", "Val acc %", "Test acc %", "Est. PI s",
                "Acc %/kReLU"):
        table.add_column(col, justify="left" if col in ("Culled", "Thinned") else "right")
    for r in rows:
        table.add_row(
            stages_text(r["culled"]), stages_text(r["thinned"], r["one_block"]), scale_text(r["alpha"]),
            scale_text(r["rho"]), f"{r['relus']:,}", f"{100 * r['val_acc']:.2f}",
            "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.2f}",
            "-" if r["est_latency_s"] is None else f"{r['est_latency_s']:.3g}", ratio_text(100 * r["acc_per_krelu"]),
        )
    return table


__all__ = ["best_under_budget", "chance_warning", "rich_table", "candidate_point", "latency_frontier", "markdown_table", "network_label", "row",
           "to_csv", "write_frontier"]

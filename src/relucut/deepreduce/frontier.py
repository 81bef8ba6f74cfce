"""The ReLU-accuracy Pareto frontier of trained candidates, and its tables (JSON, CSV, Markdown).

Accuracies are fractions in [0, 1] in the objects, JSON and CSV; the Markdown shows percent.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from relucut.deepreduce.candidates import STEM, Candidate
from relucut.errors import RelucutError
from relucut.rundir import atomic_write_json, atomic_write_text


@dataclass
class CandidateResult:
    """One trained candidate: its configuration, cost and accuracy (fractions in [0, 1])."""

    name: str
    iteration: int
    step: str
    culled: list[str]
    thinned: list[str]
    alpha: float
    rho: float
    one_block: bool
    relus: int
    macs: int
    params: int
    val_acc: float
    test_acc: float | None
    est_latency_s: float | None = None  # from the PI cost model when it is installed
    run_dir: str = ""
    on_frontier: bool = False
    kept: list[str] = field(default_factory=list)  # stages that keep ReLUs, in model order

    def network_label(self) -> str:
        """The paper's naming by the stages that keep ReLUs: ``S2RT+S3RT a0.5``."""
        suffix = ("*" if self.one_block else "") + "RT"
        names = [s.upper() + (suffix if s in self.thinned else "") for s in self.kept if s != STEM]
        extra = [f"a{self.alpha:g}" if self.alpha != 1.0 else "", f"r{self.rho:g}" if self.rho != 1.0 else ""]
        return " ".join(p for p in ["+".join(names) or "no ReLUs", *extra] if p)

    @property
    def acc_per_krelu(self) -> float:
        """Validation accuracy (a fraction) per thousand ReLUs."""
        return self.val_acc / (self.relus / 1000.0) if self.relus else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "acc_per_krelu": self.acc_per_krelu}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def of(cls, candidate: Candidate, relus: int, macs: int, params: int, val_acc: float,
           test_acc: float | None, est_latency_s: float | None = None, run_dir: str = "",
           stage_names: Sequence[str] = ()) -> CandidateResult:
        return cls(candidate.name, candidate.iteration, candidate.step, list(candidate.culled),
                   list(candidate.thinned), candidate.alpha, candidate.rho, candidate.blocks is not None,
                   int(relus), int(macs), int(params), float(val_acc),
                   None if test_acc is None else float(test_acc), est_latency_s, run_dir,
                   kept=[s for s in stage_names if s not in candidate.culled])


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, accuracy) that no other point dominates.

    A point dominates another when it costs no more and is no less accurate, and is strictly
    better in one of the two. Equal points do not dominate each other, so both stay.
    """
    keep = []
    for i, (cost_i, acc_i) in enumerate(points):
        dominated = any(
            cost_j <= cost_i and acc_j >= acc_i and (cost_j < cost_i or acc_j > acc_i)
            for j, (cost_j, acc_j) in enumerate(points) if j != i
        )
        if not dominated:
            keep.append(i)
    return keep


def mark_frontier(results: list[CandidateResult]) -> list[CandidateResult]:
    """Sets ``on_frontier`` (chosen on validation accuracy) and returns the frontier, most ReLUs first."""
    on = set(pareto_indices([(r.relus, r.val_acc) for r in results]))
    for i, r in enumerate(results):
        r.on_frontier = i in on
    return sorted((r for r in results if r.on_frontier), key=lambda r: (-r.relus, -r.val_acc))


def latency_frontier(results: Sequence[CandidateResult]) -> list[CandidateResult]:
    """The networks no other beats on both estimated PI latency and validation accuracy, fastest
    first (those without an estimate are left out). ReLU layers and MACs cost time too, so this can
    differ from the ReLU frontier."""
    timed = [r for r in results if r.est_latency_s is not None]
    front = [timed[i] for i in pareto_indices([(r.est_latency_s, r.val_acc) for r in timed])]
    return sorted(front, key=lambda r: (r.est_latency_s, -r.val_acc))


FRONTIER_VERSION = 2  # 2: accuracies as fractions; 1 held percent


def best_under_budget(results: Sequence[CandidateResult], budget: int) -> CandidateResult:
    """The most accurate (validation) candidate with at most ``budget`` ReLUs."""
    within = [r for r in results if r.relus <= budget]
    if not within:
        smallest = min(r.relus for r in results)
        raise RelucutError(f"no candidate fits a budget of {budget:,} ReLUs; the smallest reachable is "
                           f"{smallest:,} ReLUs; raise --budget to at least that")
    return max(within, key=lambda r: (r.val_acc, -r.relus))


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


def markdown_table(rows: Sequence[CandidateResult], title: str = "") -> str:
    """Rows in the layout of DeepReDuce's Table 4 (the stem ReLU is always culled)."""
    lines = [title, ""] if title else []
    lines += [
        ("| Culled | Thinned | Channel (alpha) | Fmap (rho) | #ReLU | MACs | Val acc (%) | Test acc (%) "
        "| Est. PI latency (s) | Val acc (%) / kReLU |"),
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lat = "-" if r.est_latency_s is None else f"{r.est_latency_s:.3g}"
        lines.append(
            f"| {stages_text(r.culled)} | {stages_text(r.thinned, r.one_block)} | {scale_text(r.alpha)} | {scale_text(r.rho)} "
            f"| {r.relus / 1000:.2f}K | {r.macs / 1e6:.2f}M | {_pct(r.val_acc)} | {_pct(r.test_acc)} | {lat} "
            f"| {ratio_text(100 * r.acc_per_krelu)} |"
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("name", "culled", "thinned", "alpha", "rho", "one_block", "relus", "macs", "params", "val_acc",
               "test_acc", "acc_per_krelu", "est_latency_s", "on_frontier", "run_dir")


def to_csv(rows: Sequence[CandidateResult]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.to_dict()
        d["culled"], d["thinned"] = "+".join(r.culled), "+".join(r.thinned)
        writer.writerow({k: "" if d[k] is None else d[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def write_frontier(out: Path, results: list[CandidateResult], meta: dict[str, Any]) -> list[CandidateResult]:
    """Writes frontier.json (all candidates + frontier), frontier.csv, candidates.csv and frontier.md."""
    front = mark_frontier(results)
    by_relus = sorted(results, key=lambda r: (-r.relus, -r.val_acc))
    doc = {"format": "relucut.frontier", "version": FRONTIER_VERSION, **meta,
           "frontier": [r.to_dict() for r in front], "candidates": [r.to_dict() for r in by_relus]}
    atomic_write_json(out / "frontier.json", doc)  # strict: no NaN tokens
    atomic_write_text(out / "frontier.csv", to_csv(front))
    atomic_write_text(out / "candidates.csv", to_csv(by_relus))
    title = meta.get("title", "DeepReDuce frontier")
    md = markdown_table(front, f"## {title}: Pareto frontier (chosen on validation accuracy)")
    md += "\n" + markdown_table(by_relus, "## Every trained candidate")
    atomic_write_text(out / "frontier.md", md)
    return front


def load_frontier(path: Path) -> tuple[dict[str, Any], list[CandidateResult]]:
    try:
        doc = json.loads(Path(path).read_text())
        rows = doc["candidates"]
        if doc.get("version", 1) < 2:
            rows = [_percent_to_fractions(d) for d in rows]
        return doc, [CandidateResult.from_dict(d) for d in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RelucutError(f"cannot read frontier {path} ({exc.__class__.__name__}: {exc}); rerun the search") from None


def _percent_to_fractions(row: dict[str, Any]) -> dict[str, Any]:
    """A version-1 row (accuracy in percent) in today's units."""
    return {**row, **{k: row[k] / 100 for k in ("val_acc", "test_acc") if row.get(k) is not None}}

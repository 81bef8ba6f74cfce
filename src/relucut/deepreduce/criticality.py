"""Stage criticality (DeepReDuce §3.1, Eq. 1) and the networks that measure it.

For each non-stem stage S_k a network keeps ReLUs only in S_k (the stem's are dropped too) and
is trained with and without KD from the full-ReLU teacher. With the KD accuracies,
C_k = (Acc[S_k] - min_i Acc[S_i]) / (#ReLU[S_k] in thousands)^w, w = 0.07. Accuracies in Eq. 1
are in percent (the table stores fractions, as every results file does); the unit of the ReLU count does not change the order (it scales every C_k equally)
and thousands reproduce the paper's Table 10 values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from relucut.deepreduce.candidates import STEM
from relucut.errors import RelucutError
from relucut.plan import ReLUPlan
from relucut.sites import SiteMap

CRITICALITY_WEIGHT = 0.07
FORMAT = "relucut.criticality"
VERSION = 2  # 2: accuracies as fractions in [0, 1]; 1 held percent
ACCURACY_KEYS = ("val_acc_kd", "test_acc_kd", "val_acc", "test_acc")


def stage_only_plan(sites: SiteMap, stage: str) -> ReLUPlan:
    """Keeps ReLUs only in ``stage``: every other stage, the stem included, is culled."""
    others = [s for s in sites.stage_names if s != stage]
    plan = ReLUPlan.deepreduce(sites, cull=others)
    plan.meta.update({"criticality_stage": stage})
    return plan


def criticality_scores(
    accuracy: Mapping[str, float], relus: Mapping[str, int], weight: float = CRITICALITY_WEIGHT
) -> dict[str, float]:
    """Eq. 1 for every stage: accuracy in percent, ReLUs counted per input."""
    if not accuracy:
        raise RelucutError("criticality needs at least one stage accuracy")
    floor = min(accuracy.values())
    out = {}
    for stage, acc in accuracy.items():
        n = relus[stage]
        if n <= 0:
            raise RelucutError(f"stage {stage} has no ReLUs; it cannot be scored for criticality")
        out[stage] = (acc - floor) / (n / 1000.0) ** weight
    return out


def criticality_order(scores: Mapping[str, float], stage_names: Sequence[str]) -> list[str]:
    """Stages from least to most critical; ties keep model order (earlier = culled first)."""
    position = {s: i for i, s in enumerate(stage_names)}
    return sorted(scores, key=lambda s: (scores[s], position.get(s, len(position))))


@dataclass
class StageCriticality:
    """One stage's row; accuracies are fractions in [0, 1], ``score`` is Eq. 1 (on percent)."""

    stage: str
    relus: int
    val_acc_kd: float
    test_acc_kd: float | None
    val_acc: float | None = None  # without KD (None when not trained)
    test_acc: float | None = None
    score: float = 0.0


@dataclass
class CriticalityTable:
    """Table 1/3 of the paper for one model and dataset, plus the resulting order."""

    model: dict[str, Any]
    dataset: str
    stages: list[StageCriticality]
    order: list[str]
    weight: float = CRITICALITY_WEIGHT
    schedule: dict[str, Any] = field(default_factory=dict)  # epochs used, and whether a proxy
    teacher: dict[str, Any] = field(default_factory=dict)  # full-ReLU row: relus, val/test acc
    selection: str = "validation accuracy with KD"

    @classmethod
    def build(cls, model: dict[str, Any], dataset: str, rows: list[StageCriticality], stage_names: Sequence[str],
              schedule: dict[str, Any] | None = None, teacher: dict[str, Any] | None = None,
              weight: float = CRITICALITY_WEIGHT) -> CriticalityTable:
        percent = {r.stage: 100 * r.val_acc_kd for r in rows}  # Eq. 1 is written for percent
        scores = criticality_scores(percent, {r.stage: r.relus for r in rows}, weight)
        for r in rows:
            r.score = scores[r.stage]
        return cls(model, dataset, rows, criticality_order(scores, stage_names), weight,
                   dict(schedule or {}), dict(teacher or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "criticality file") -> CriticalityTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RelucutError(f"{source} is not a relucut criticality table; make one with 'relucut criticality'")
        if data.get("version", 1) < 2:
            data = _percent_to_fractions(data)
        try:
            rows = [StageCriticality(**r) for r in data["stages"]]
            return cls(data["model"], data["dataset"], rows, list(data["order"]), float(data["weight"]),
                       dict(data.get("schedule") or {}), dict(data.get("teacher") or {}),
                       data.get("selection", "validation accuracy with KD"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RelucutError(f"{source} is corrupt ({exc.__class__.__name__}: {exc}); recompute it") from None

    def to_markdown(self) -> str:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}"

        lines = [
            (f"Stage criticality of {self.model.get('name', '?')} on {self.dataset} "
            f"(C_k from {self.selection}, w = {self.weight:g}; schedule: {describe_schedule(self.schedule)})"),
            "",
            "| stage | #ReLUs | val w/o KD (%) | val w/ KD (%) | test w/o KD (%) | test w/ KD (%) | C_k |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        if self.teacher:
            lines.append(f"| FR (teacher) | {self.teacher.get('relus', 0):,} | {pct(self.teacher.get('val_acc'))} | - "
                         f"| {pct(self.teacher.get('test_acc'))} | - | - |")
        for r in self.stages:
            lines.append(f"| {r.stage.upper()} | {r.relus:,} | {pct(r.val_acc)} | {pct(r.val_acc_kd)} | "
                         f"{pct(r.test_acc)} | {pct(r.test_acc_kd)} | {r.score:.2f} |")
        lines += ["", "Order, least to most critical: " + " < ".join(s.upper() for s in self.order), ""]
        return "\n".join(lines)


def _percent_to_fractions(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 table (accuracies in percent) in today's units."""
    def scaled(row: dict[str, Any]) -> dict[str, Any]:
        return {k: v / 100 if k in ACCURACY_KEYS and v is not None else v for k, v in row.items()}

    return {**data, "stages": [scaled(r) for r in data.get("stages", [])], "teacher": scaled(data.get("teacher") or {})}


def describe_schedule(schedule: Mapping[str, Any]) -> str:
    if not schedule:
        return "unrecorded"
    epochs, full = schedule.get("epochs"), schedule.get("full_epochs")
    if schedule.get("proxy"):
        return f"proxy, {epochs} epochs per stage network (candidates get {full})"
    return f"full, {epochs} epochs per stage network"


__all__ = [
    "CRITICALITY_WEIGHT",
    "STEM",
    "CriticalityTable",
    "StageCriticality",
    "criticality_order",
    "criticality_scores",
    "describe_schedule",
    "stage_only_plan",
]

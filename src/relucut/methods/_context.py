"""What a method run is given (``MethodContext``) and what it returns (``MethodResult``).

A run gets the model spec, the data splits, the base training recipe every stage derives from,
its own run folder, the all-ReLU teacher (a run dir, checkpoint or module; None: the method trains
one into its folder), the executor that runs training jobs, and a console. It returns the network
it exported: where it is, what it costs (counted on the export), and how accurate it is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry is read by `relucut --help`, which must not import torch
    from rich.console import Console
    from torch import nn

    from relucut.cost import CostReport
    from relucut.data.splits import DataSplits
    from relucut.models.registry import ModelSpec
    from relucut.plan import ReLUPlan
    from relucut.train.config import TrainConfig

RESULT_FILE = "result.json"
EXPORT_DIR = "export"


@dataclass
class MethodContext:
    spec: ModelSpec
    data: DataSplits
    base: TrainConfig  # resolved for ``spec`` on ``data`` (its split and seed), no plan, no teacher
    out: Path  # the method's run folder (resumable: a rerun with the same settings continues there)
    teacher: nn.Module | Path | None = None  # the all-ReLU KD teacher; None: trained into the folder
    executor: Any = None  # relucut.executors.Executor for training jobs; None: one after another here
    console: Console | None = None
    progress: bool = True

    def at(self, out: Path) -> MethodContext:
        """The same context for a run in another folder."""
        return dataclasses.replace(self, out=Path(out))

    def teacher_path(self, method: str) -> Path | None:
        """The teacher as a path, for methods that hand it to training jobs (which may run elsewhere)."""
        from relucut.errors import RelucutError

        if self.teacher is not None and not isinstance(self.teacher, (str, Path)):
            raise RelucutError(f"{method} takes its teacher as a run dir or checkpoint path, not a module; "
                               "train it with relucut.train.train and pass the run dir")
        return Path(self.teacher) if self.teacher is not None else None

    def jobs(self):
        """The executor training jobs go through (sequential on ``data`` unless one was given)."""
        if self.executor is None:
            from relucut.executors import SequentialExecutor

            self.executor = SequentialExecutor(progress=self.progress, data=self.data)
        return self.executor

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False)


@dataclass
class MethodResult:
    """One exported network of a method: the run that trained it, the export, its cost and accuracy."""

    method: str  # the registered method (or frontier entry, e.g. "snl-channel")
    name: str  # unique within a search: the method and what it is ("snl/25000", "deepreduce/cull-s1")
    label: str  # the network in words ("snl masks to 25,000", "S2+S3RT a0.5")
    run_dir: Path
    export_dir: Path
    report: CostReport  # counted on the exported network
    val_acc: float | None  # selection split (a fraction)
    test_acc: float | None
    budget: int | None = None  # the ReLU budget it was made for (None: a point of a coarse search)
    config: dict[str, Any] = field(default_factory=dict)  # the method's resolved settings
    seconds: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the method's result.json
    details: dict[str, Any] = field(default_factory=dict)  # what a frontier point records of it (a candidate's edits)
    _model: Any = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> nn.Module:
        """The exported network, rebuilt from its recipe (eval mode)."""
        if self._model is None:
            from relucut.export import load_export

            self._model = load_export(self.export_dir)
        return self._model

    @property
    def plan(self) -> ReLUPlan:
        return self.model.relucut_recipe.plan

    @property
    def relus(self) -> int:
        return self.report.relus

    @property
    def accuracy(self) -> float | None:
        """Test accuracy of the exported network's weights (``relucut.reduce``'s answer)."""
        return self.test_acc

    @property
    def result(self) -> dict[str, Any]:
        """The method's result.json (older name of ``summary``)."""
        return self.summary

    @classmethod
    def of_export(cls, method: str, name: str, label: str, run_dir: Path, export_dir: Path,
                  val_acc: float | None, test_acc: float | None, **fields: Any) -> MethodResult:
        """A result counted on its export (the priced network is the exported one)."""
        from relucut.cost import count
        from relucut.export import load_export

        model = load_export(export_dir)
        report = count(model, model.relucut_recipe.model.input_size)
        return cls(method, name, label, Path(run_dir), Path(export_dir), report, val_acc, test_acc,
                   _model=model, **fields)


def method_result(entry: str, config: Any, ctx: MethodContext, summary: dict[str, Any], label: str) -> MethodResult:
    """The result of a method run that wrote ``summary`` (its result.json) and ``ctx.out/export``."""
    row = summary["result"]
    return MethodResult.of_export(entry, f"{entry}/{config.budget}", label, ctx.out, ctx.out / EXPORT_DIR,
                                  row.get("val_acc"), row.get("test_acc"), budget=config.budget,
                                  config=config.to_dict(), seconds=summary.get("seconds"), summary=summary)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """``result.json`` of a method run that ended (it is written last, atomically, after the
    export), else None."""
    try:
        data = json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and (Path(run_dir) / EXPORT_DIR).is_dir() else None




@dataclass
class FrontierStep:
    """One step of a frontier: ``work()`` trains (or reuses) networks and returns them exported."""

    kind: str  # steps of one kind share an ETA (a DeepReDuce search takes far longer than one masked run)
    title: str
    budget: int | None  # None: one step for every budget (it runs before the per-budget steps)
    work: Callable[[], list[MethodResult]]


def per_budget_steps(method: Any, entry: str, template: Any, fr: Any,
                     budgets: list[int] | None = None) -> list[FrontierStep]:
    """The default way a method takes part in a frontier: one run per ReLU budget below the full
    network's count (``budgets``: other ones), in ``OUT/<entry>/<budget>`` (what ``relucut METHOD
    --out`` writes there)."""
    steps = []
    for budget in fr.mask_budgets() if budgets is None else budgets:
        config = template.with_budget(budget)
        ctx = fr.ctx.at(fr.out / entry / str(budget))
        steps.append(FrontierStep(entry, f"budget {budget:,}: {entry}", budget,
                                  lambda config=config, ctx=ctx: [method.run(config, ctx)]))
    return steps


__all__ = ["EXPORT_DIR", "RESULT_FILE", "FrontierStep", "MethodContext", "MethodResult", "method_result",
           "per_budget_steps", "read_result"]

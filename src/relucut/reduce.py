"""One call per method (torchao style): ``relucut.reduce(spec, MethodConfig(...), data=, out=)``.

The method is chosen by the config's type; the result carries the exported network, its plan,
its cost report and its accuracy. SNL and SENet (shallow and AC as SENetConfig options) go
through here today; DeepReDuce and DeepReShape are reached through ``relucut deepreduce`` /
``relucut deepreshape`` until their configs join.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from relucut.cost import CostReport, count
from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan


@dataclass
class ReduceResult:
    model: nn.Module  # the exported network, rebuilt from its recipe (eval mode)
    plan: ReLUPlan
    report: CostReport
    export_dir: Path
    accuracy: float | None  # test accuracy (a fraction) of the exported network's weights
    result: dict[str, Any]  # the method's result.json


def reduce(spec: ModelSpec, config: Any, *, data: DataSplits, out: str | Path,
           teacher: nn.Module | str | Path | None = None, train: Any = None, progress: bool = True) -> ReduceResult:
    """Runs the method ``config`` names on ``spec`` into ``out`` (resumable) and returns its export.

    ``teacher``: the all-ReLU start point and KD teacher (a module, a ``relucut train`` run dir
    or checkpoint); without it one is trained with ``train``'s recipe (a ``TrainConfig``)."""
    from relucut.export import load_export
    from relucut.finegrained.pipeline import run_senet, run_snl
    from relucut.finegrained.senet import SENetConfig
    from relucut.finegrained.snl import SNLConfig

    runners = {SNLConfig: run_snl, SENetConfig: run_senet}
    runner = runners.get(type(config))
    if runner is None:
        names = ", ".join(c.__name__ for c in runners)
        raise RelucutError(f"relucut.reduce takes one of {names}, got {type(config).__name__}")
    result = runner(spec, data, out, config, base=train, teacher=teacher, progress=progress)
    export_dir = Path(out) / "export"
    model = load_export(export_dir)
    recipe = model.relucut_recipe
    return ReduceResult(model, recipe.plan, count(model, spec.input_size), export_dir,
                        result["result"]["test_acc"], result)

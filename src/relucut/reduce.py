"""One call per method (torchao style): ``relucut.reduce(spec, MethodConfig(...), data=, out=)``.

The method is chosen by the config's type (``DeepReDuceConfig``, ``SNLConfig``, ``SENetConfig``
with shallow and AC as its options, ``DeepReShapeConfig``); the result carries the exported network,
its plan, its cost report and its accuracy. Every method resumes in ``out`` when called again.
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


def _teacher_path(teacher: Any, method: str) -> str | Path | None:
    if isinstance(teacher, nn.Module):
        raise RelucutError(f"{method} takes its teacher as a run dir or checkpoint path, not a module; "
                           "train it with relucut.train.train and pass the run dir")
    return teacher


def reduce(spec: ModelSpec, config: Any, *, data: DataSplits, out: str | Path,
           teacher: nn.Module | str | Path | None = None, train: Any = None, progress: bool = True) -> ReduceResult:
    """Runs the method ``config`` names on ``spec`` into ``out`` (resumable) and returns its export.

    ``teacher``: the all-ReLU KD teacher (and start point of the masks): a ``relucut train`` run dir
    or checkpoint (SNL/SENet also take a module); without it one is trained with ``train``'s recipe
    (a ``TrainConfig``, the engine's defaults otherwise). DeepReDuce and DeepReShape train their
    networks with that recipe too."""
    from relucut.deepreduce.search import DeepReDuceConfig, run_deepreduce
    from relucut.deepreshape.pipeline import DeepReShapeConfig, run_deepreshape
    from relucut.export import load_export
    from relucut.finegrained.pipeline import base_config, run_senet, run_snl
    from relucut.finegrained.senet import SENetConfig
    from relucut.finegrained.snl import SNLConfig
    from rich.console import Console

    methods = (DeepReDuceConfig, SNLConfig, SENetConfig, DeepReShapeConfig)
    if not isinstance(config, methods):
        names = ", ".join(c.__name__ for c in methods)
        raise RelucutError(f"relucut.reduce takes one of {names}, got {type(config).__name__}")
    if isinstance(config, SNLConfig):
        result = run_snl(spec, data, out, config, base=train, teacher=teacher, progress=progress)
    elif isinstance(config, SENetConfig):
        result = run_senet(spec, data, out, config, base=train, teacher=teacher, progress=progress)
    elif isinstance(config, DeepReDuceConfig):
        result = run_deepreduce(base_config(spec, data, train), out, config,
                                teacher=_teacher_path(teacher, "DeepReDuce"), data=data,
                                console=Console(quiet=not progress), progress=progress)
    else:
        result = run_deepreshape(spec, base_config(spec, data, train), out, config,
                                 teacher=_teacher_path(teacher, "DeepReShape"), data=data, progress=progress)
    export_dir = Path(out) / "export"
    model = load_export(export_dir)
    recipe = model.relucut_recipe
    return ReduceResult(model, recipe.plan, count(model, recipe.model.input_size), export_dir,
                        result["result"]["test_acc"], result)

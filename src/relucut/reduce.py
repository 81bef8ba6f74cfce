"""One call per method (torchao style): ``relucut.reduce(spec, MethodConfig(...), data=, out=)``.

The method is the one the config's type is registered for (``relucut.methods``); the result is the
exported network (``MethodResult``: its folder, plan, cost report, accuracy). Every method resumes
in ``out`` when called again with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from relucut.data.splits import DataSplits
from relucut.methods import MethodContext, MethodResult, method_of
from relucut.models.registry import ModelSpec

ReduceResult = MethodResult  # the name relucut.reduce's result had before the method registry


def reduce(spec: ModelSpec, config: Any, *, data: DataSplits, out: str | Path,
           teacher: nn.Module | str | Path | None = None, train: Any = None, progress: bool = True,
           executor: Any = None, console: Any = None) -> MethodResult:
    """Runs the method ``config`` is registered for on ``spec`` into ``out`` (resumable) and returns its export.

    ``teacher``: the all-ReLU KD teacher (and start point of the masks): a ``relucut train`` run dir
    or checkpoint (the fine-grained methods also take a module); without it one is trained with
    ``train``'s recipe (a ``TrainConfig``; the engine's defaults otherwise), which is also the
    recipe of every network DeepReDuce and DeepReShape train. ``executor``: where training jobs
    run (``relucut.executors``; default: one after another in this process)."""
    from rich.console import Console

    from relucut.train.base import base_config

    method = method_of(config)
    config.check()
    ctx = MethodContext(spec=spec, data=data, base=base_config(spec, data, train), out=Path(out),
                        teacher=Path(teacher) if isinstance(teacher, str) else teacher, executor=executor,
                        console=console or Console(quiet=not progress), progress=progress)
    return method.run(config, ctx)


__all__ = ["ReduceResult", "reduce"]

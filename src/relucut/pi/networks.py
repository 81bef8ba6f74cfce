"""Which network a ``relucut pi`` command is about: an export directory, or a zoo model + plan."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, apply_plan_, build_plan
from relucut.sites import find_sites

RECIPE_FILE = "recipe.json"


def looks_like_path(target: str) -> bool:
    return Path(target).exists() or "/" in target or target.startswith(".")


def load_export_dir(target: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The exported network (eval mode) and its input size."""
    path = Path(target)
    if not path.is_dir():
        raise RelucutError(f"'{target}' is not a directory; pass an export directory (from `relucut export`) "
                           "or a zoo model name")
    if not (path / RECIPE_FILE).is_file():
        raise RelucutError(f"'{target}' has no {RECIPE_FILE}; pass a directory written by `relucut export`")
    from relucut.export import load_export

    model = load_export(path)
    return model, tuple(model.relucut_recipe.model.input_size)


def planned_zoo_model(spec: ModelSpec, plan_file: str | None, cull: list[str], thin: list[str],
                      seed: int = 0) -> tuple[nn.Module, ReLUPlan]:
    """Builds ``spec`` (seeded weights, eval mode) with the plan from a file and/or --cull/--thin applied."""
    import torch

    torch.manual_seed(seed)
    model = spec.build().eval()
    plan = build_plan(spec, plan_file, cull, thin)
    if plan.decisions:
        plan.validate(find_sites(model, spec.input_size))
        apply_plan_(model, plan)
    return model, plan

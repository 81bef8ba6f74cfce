"""The end of every fine-grained method: a relucut plan, a recipe, and a deployable model.

The deployable model has each frozen mask as a ``PartialReLU`` (gather-ReLU-scatter: exactly
its ones are evaluated), gated blocks as their conv-BN, and, for an AC export, only the stages up
to the auxiliary classifier. ``recipe.json`` holds what rebuilds it from the zoo:
the model spec, the plan, the blocks replaced by conv-BN and the AC position.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from relucut.cost import count
from relucut.errors import RelucutError
from relucut.finegrained.aux import AuxExit, AuxHead
from relucut.finegrained.gated import GatedBranch
from relucut.finegrained.mask_site import LearnableMaskSite
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, apply_plan_, atomic_write_text
from relucut.site_module import PartialReLU, ReLUSite
from relucut.sites import find_sites

RECIPE_FORMAT = "relucut.finegrained.recipe"


def site_names(model: nn.Module) -> dict[str, str]:
    """Module path -> site name of the model's learnable mask sites (fx names: dots -> '_')."""
    return {path: path.replace(".", "_") for path, m in model.named_modules() if isinstance(m, LearnableMaskSite)}


def plan_of(model: nn.Module, meta: dict[str, Any] | None = None) -> ReLUPlan:
    """A plan with each frozen learnable site's mask (pixel C,H,W or channel C,1,1)."""
    plan = ReLUPlan(meta=dict(meta or {}))
    for path, module in model.named_modules():
        if isinstance(module, LearnableMaskSite):
            if module.state != "frozen":
                raise RelucutError(f"site '{path}' is still learning its mask; freeze masks before exporting")
            plan.set_mask(path.replace(".", "_"), module.mask.cpu())
    return plan


def _swap(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)


def deployable(model: nn.Module) -> nn.Module:
    """A copy with masks as PartialReLU; gates must have been removed (their main branch gone)."""
    out = copy.deepcopy(model)
    for path, module in list(out.named_modules()):
        if isinstance(module, GatedBranch):
            raise RelucutError(f"block '{path}' still has its gated main branch; remove main branches first")
        if isinstance(module, LearnableMaskSite):
            if module.state != "frozen":
                raise RelucutError(f"site '{path}' is still learning its mask; freeze masks before exporting")
            _swap(out, path, PartialReLU.from_mask(module.mask, module.shape).to(module.alpha.device))
    return out


def build_from_recipe(recipe: dict[str, Any]) -> nn.Module:
    """Rebuilds the deployable architecture (untrained) that ``recipe`` describes."""
    if recipe.get("format") != RECIPE_FORMAT:
        raise RelucutError("not a fine-grained relucut recipe (missing format); export one with relucut snl/senet")
    spec = ModelSpec.from_dict(recipe["model"])
    model = spec.build()
    for path in recipe.get("shallow_blocks", []):
        block = model.get_submodule(path)
        from relucut.finegrained.gated import shallow_twin

        _swap(model, path, shallow_twin(block))
    plan = ReLUPlan.from_dict(recipe["plan"])
    sites = {n: d for n, d in plan.decisions.items()}
    if recipe.get("aux_after"):
        from relucut.finegrained.aux import _stage_channels

        after = recipe["aux_after"]
        head = AuxHead(_stage_channels(model, after, spec.input_size), spec.num_classes)
        model = AuxExit(model, head, after)
        sites = {n: d for n, d in sites.items() if _site_in(model, n)}
    shapes = {s.name: s.shape for s in find_sites(model, spec.input_size)}
    apply_plan_(model, ReLUPlan(decisions=sites))
    for path, module in list(model.named_modules()):
        if isinstance(module, ReLUSite) and module.mode == "mask":
            _swap(model, path, PartialReLU.from_mask(module.mask, shapes[path.replace(".", "_")]))
    return model


def _site_in(model: nn.Module, name: str) -> bool:
    return any(p.replace(".", "_") == name for p, _ in model.named_modules())


def export(out_dir: Path, model: nn.Module, spec: ModelSpec, *, shallow_blocks: list[str] = (),
           aux: tuple[AuxHead, str] | None = None, meta: dict[str, Any] | None = None,
           onnx: bool = True) -> dict[str, Any]:
    """Exports the trained ``model`` to ``out_dir`` and returns its cost summary.

    Masks only: ``relucut.export.export_model`` (recipe.json, model.pt, model.onnx; BN folded).
    With blocks made shallow or an AC exit (``aux`` = (head, stage)), whose structure the shared
    recipe cannot replay: a fine-grained recipe.json (spec, plan, shallow blocks, AC stage) and the
    deployable model's state dict in model.pt.
    """
    plan = plan_of(model, meta)
    if not shallow_blocks and aux is None:
        return _export_masks_only(out_dir, model, spec, plan, onnx)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = model if aux is None else AuxExit(model, aux[0], aux[1])
    net = deployable(net).eval()
    recipe = {
        "format": RECIPE_FORMAT, "version": 1, "model": spec.to_dict(), "plan": plan.to_dict(),
        "shallow_blocks": list(shallow_blocks), "aux_after": aux[1] if aux else None,
    }
    summary = _summary(net, spec)
    plan.save(out_dir / "plan.json")
    atomic_write_text(out_dir / "recipe.json", json.dumps(recipe, indent=1))
    tmp = out_dir / ".model.pt.tmp"
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, tmp)
    tmp.replace(out_dir / "model.pt")
    atomic_write_text(out_dir / "cost.json", json.dumps(summary, indent=1))
    return summary


def _summary(net: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    report = count(net, spec.input_size)
    return {"relus": report.relus, "relus_full": report.relus_full, "macs": report.macs,
            "params": report.params, "conv_depth": report.conv_depth}


def _export_masks_only(out_dir: Path, model: nn.Module, spec: ModelSpec, plan: ReLUPlan, onnx: bool) -> dict[str, Any]:
    from relucut.export import export_model

    plain = copy.deepcopy(model).cpu()
    for path, module in list(plain.named_modules()):
        if isinstance(module, LearnableMaskSite):
            _swap(plain, path, ReLUSite("mask", module.mask))  # the plan-applied form export_model rebuilds
    result = export_model(spec, plan, plain.state_dict(), out_dir, onnx=onnx, meta=plan.meta)
    summary = _summary(result.model, spec)
    plan.save(out_dir / "plan.json")
    atomic_write_text(out_dir / "cost.json", json.dumps(summary, indent=1))
    return summary


def load_export(out_dir: str | Path) -> nn.Module:
    """Loads either kind of export written by :func:`export` (eval mode)."""
    out_dir = Path(out_dir)
    for name in ("recipe.json", "model.pt"):
        if not (out_dir / name).is_file():
            raise RelucutError(f"'{out_dir}' holds no {name}; pass a folder written by relucut snl/senet")
    if json.loads((out_dir / "recipe.json").read_text()).get("format") != RECIPE_FORMAT:
        from relucut.export import load_export as load_shared

        return load_shared(out_dir)
    model = build_from_recipe(json.loads((out_dir / "recipe.json").read_text()))
    model.load_state_dict(torch.load(out_dir / "model.pt", map_location="cpu"))
    return model.eval()


__all__ = ["build_from_recipe", "deployable", "export", "load_export", "plan_of"]

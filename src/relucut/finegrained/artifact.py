"""The end of every fine-grained method: a relucut plan and a relucut export.

A trained fine-grained model (frozen mask sites, gated blocks reduced to their shallow form, an
optional auxiliary exit) goes through the one export writer, ``relucut.export``: recipe.json lists
the structure ops (a ``replace_block`` per shallow block, then ``aux_exit``) and the plan holds the
masks; model.pt and model.onnx hold the reduced network (BNs folded, masks as ``PartialReLU``).
``relucut.export.load_export`` rebuilds every export; plan.json and cost.json sit beside them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from relucut.errors import RelucutError
from relucut.export import build_export, write_export
from relucut.export import load_export  # noqa: F401 - the one loader, as relucut.finegrained.load_export
from relucut.structure import AuxExit, AuxHead, replacement_kind
from relucut.finegrained.gated import GatedBranch
from relucut.finegrained.mask_site import LearnableMaskSite
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan
from relucut.rundir import json_text
from relucut.site_module import PartialReLU, ReLUSite
from relucut.train.distributed import current_ranks

SUMMARY_KEYS = ("relus", "relus_full", "relus_without_stem", "macs", "params", "conv_depth")


def _poly(module: LearnableMaskSite):
    poly = module.coefficients()
    return None if poly is None else poly.detach().cpu()


def plan_of(model: nn.Module, meta: dict[str, Any] | None = None) -> ReLUPlan:
    """A plan with each frozen learnable site's mask (pixel C,H,W or channel C,1,1) and, where its
    other positions compute one, its learned polynomial."""
    plan = ReLUPlan(meta=dict(meta or {}))
    for path, module in model.named_modules():
        if isinstance(module, LearnableMaskSite):
            if module.state != "frozen":
                raise RelucutError(f"site '{path}' is still learning its mask; freeze masks before exporting")
            plan.set_mask(path.replace(".", "_"), module.mask.cpu(), _poly(module))
    return plan


def _check_no_gates(model: nn.Module) -> None:
    for path, module in model.named_modules():
        if isinstance(module, GatedBranch):
            raise RelucutError(f"block '{path}' still has its gated main branch; remove main branches first")


def deployable(model: nn.Module) -> nn.Module:
    """A copy with masks as PartialReLU; gates must have been removed (their main branch gone)."""
    _check_no_gates(model)
    out = copy.deepcopy(model)
    for path, module in list(out.named_modules()):
        if isinstance(module, LearnableMaskSite):
            if module.state != "frozen":
                raise RelucutError(f"site '{path}' is still learning its mask; freeze masks before exporting")
            out.set_submodule(path, PartialReLU.from_mask(module.mask, module.shape, _poly(module))
                              .to(module.scores.device))
    return out


def structure_of(model: nn.Module, spec: ModelSpec, shallow_blocks: list[str] | tuple[str, ...] = (),
                 aux_after: str | None = None) -> list[dict[str, Any]]:
    """The recipe's structure ops that turn ``spec``'s model into ``model``'s architecture:
    each shallow block with the replacement kind it holds, then the AC exit (which drops stages,
    so it comes last)."""
    fresh = spec.build()
    ops = []
    for path in shallow_blocks:
        try:
            original, replaced = fresh.get_submodule(path), model.get_submodule(path)
        except AttributeError:
            raise RelucutError(f"shallow block '{path}' is not a block of {spec.name}; "
                               "pass the block paths the gates were installed at") from None
        ops.append({"op": "replace_block", "path": path, "kind": replacement_kind(original, replaced, path)})
    if aux_after is not None:
        ops.append({"op": "aux_exit", "after": aux_after})
    return ops


def _plan_applied(net: nn.Module) -> nn.Module:
    """A CPU copy whose frozen mask sites are plain ``ReLUSite("mask")``s: the form the export
    writer rebuilds from spec, structure and plan, so its state_dict loads there."""
    plain = copy.deepcopy(net).cpu().eval()
    for path, module in list(plain.named_modules()):
        if isinstance(module, LearnableMaskSite):
            plain.set_submodule(path, ReLUSite("mask", module.mask.cpu(), _poly(module)))
    return plain


def export(out_dir: Path, model: nn.Module, spec: ModelSpec, *, shallow_blocks: list[str] = (),
           aux: tuple[AuxHead, str] | None = None, meta: dict[str, Any] | None = None,
           onnx: bool = True) -> dict[str, Any]:
    """Exports the trained ``model`` to ``out_dir`` and returns the exported network's cost summary
    (relus, relus_full, relus_without_stem, macs, params, conv_depth).

    ``shallow_blocks``: block paths now holding their shallow replacement; ``aux`` = (head, stage):
    export the auxiliary exit instead of the full network. The directory (recipe.json, model.pt,
    model.onnx, plan.json, cost.json) is written as a whole, after everything is built.
    """
    _check_no_gates(model)
    net = model if aux is None else AuxExit(model, aux[0], aux[1])
    if not current_ranks().main:  # under torchrun rank 0 writes the export; the others only count it
        from relucut.cost import count

        report = count(_plan_applied(net), spec.input_size)
        return {key: getattr(report, key) for key in SUMMARY_KEYS}
    plan = plan_of(net, meta)  # an AC exit has only the sites of its stages
    structure = structure_of(model, spec, shallow_blocks, aux[1] if aux else None)
    result = build_export(spec, plan, _plan_applied(net).state_dict(), out_dir, structure=structure,
                          onnx=onnx, meta=plan.meta)
    summary = {key: result.recipe.after[key] for key in SUMMARY_KEYS}
    write_export(result, {"plan.json": plan.to_json().encode(),
                          "cost.json": json_text(summary, where="cost.json").encode()})
    return summary


__all__ = ["deployable", "export", "load_export", "plan_of", "structure_of"]

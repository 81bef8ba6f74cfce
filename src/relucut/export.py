"""Export: a physically reduced network whose private-inference ReLU count is the plan's.

Structure ops first change the spec-built model's architecture (``apply_structure``: a block
replaced by its shallow form, an auxiliary exit). ``reduce_model`` then turns the plan-applied
model into an fx graph of plain ops: dropped sites are removed, masked sites become
``PartialReLU`` (gather -> ReLU -> scatter), BNs fold into their convs, and linear layers merge
where that is exact (``relucut.merge``). ``export_model`` writes ``recipe.json`` (model spec,
structure, plan, transforms, counts), ``model.pt`` (the reduced state_dict) and ``model.onnx``
(dynamic batch axis); ``load_export`` rebuilds any export by replaying its recipe. No pickles.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

import relucut
from relucut.cost import CostReport, count
from relucut.errors import RelucutError
from relucut.merge import (
    apply_transform,
    finish_rewrite,
    fold_bn_pairs,
    plan_and_merge,
    propagate_shapes,
    shallow_replacement,
    shallow_shortcut_replacement,
)
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, apply_plan
from relucut.recipe import RECIPE_FILE, Recipe, check_structure_op, is_export_dir
from relucut.site_module import PartialReLU, ReLUSite, is_site_module
from relucut.sites import find_sites, is_site_node, trace

MODEL_FILE = "model.pt"
IDENTITY_MODULES = (nn.Identity, nn.Dropout)  # in eval mode both pass their input through
ONNX_FILE = "model.onnx"
ONNX_BATCH_AXES = {"input": {0: "batch"}, "output": {0: "batch"}}  # any batch size at inference


# -- checkpoints ------------------------------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``: a plain state_dict, or a dict holding one under "model"."""
    path = Path(path)
    if not path.is_file():
        raise RelucutError(f"checkpoint '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise RelucutError(f"cannot read checkpoint '{path}' ({exc.__class__.__name__}); "
                           "pass a file written by torch.save") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise RelucutError(f"checkpoint '{path}' holds no state_dict (expected tensors, or a dict with 'model')")
    return dict(data)


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Loads ``state_dict`` strictly, with a one-line error naming what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            problems.append(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
    if problems:
        raise RelucutError(
            f"the {what} does not fit this model and plan ({'; '.join(problems)}); "
            "pass the model options and plan it was trained with"
        )
    model.load_state_dict(state_dict)


# -- structure: architecture changes made to the spec-built model before its plan -------------
# kind -> builder of a fresh replacement from the block it replaces (weights come from model.pt)
BLOCK_REPLACEMENTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    # the block without its inner ReLU: one conv-BN + its shortcut, then its post-add ReLU site
    "conv_bn_shortcut": shallow_shortcut_replacement,
    # exports before the fix: one conv-BN alone, no shortcut, no post-add ReLU (still replayed)
    "conv_bn": shallow_replacement,
}


def _submodule(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise RelucutError(f"recipe does not fit the model: it has no {what} '{path}'") from None


def build_replacement(block: nn.Module, kind: str, path: str = "?") -> nn.Module:
    """A fresh ``kind`` replacement of ``block`` (one-line errors for unknown kinds and blocks)."""
    builder = BLOCK_REPLACEMENTS.get(kind)
    if builder is None:
        raise RelucutError(f"unknown block replacement kind '{kind}' at '{path}'; "
                           f"this relucut knows {', '.join(BLOCK_REPLACEMENTS)}")
    try:
        return builder(block)
    except TypeError:
        raise RelucutError(f"block '{path}' is a {type(block).__name__}, which replacement '{kind}' "
                           "cannot replace; only zoo two-conv BasicBlocks have a shallow form") from None


def _layout(module: nn.Module) -> list[tuple[str, Any]]:
    """Module names and types and parameter shapes, ReLU sites aside (a plan decides those)."""
    sites = [name for name, m in module.named_modules() if name and is_site_module(m)]

    def in_site(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in sites)

    modules = [(name, type(m)) for name, m in module.named_modules() if not in_site(name)]
    return modules + [(name, tuple(t.shape)) for name, t in module.state_dict().items() if not in_site(name)]


def replacement_kind(original: nn.Module, replaced: nn.Module, path: str = "?") -> str:
    """The kind whose fresh replacement of ``original`` has ``replaced``'s modules and shapes."""
    for kind in BLOCK_REPLACEMENTS:
        try:
            fresh = build_replacement(original, kind, path)
        except RelucutError:
            continue
        if _layout(fresh) == _layout(replaced):
            return kind
    raise RelucutError(f"block '{path}' ({type(replaced).__name__}) is none of the known shallow forms "
                       f"({', '.join(BLOCK_REPLACEMENTS)}); replace blocks with relucut.finegrained.gated")


def _replace_block(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    path = step["path"]
    model.set_submodule(path, build_replacement(_submodule(model, path, "block"), step["kind"], path))
    return model


def _aux_exit(model: nn.Module, step: dict[str, Any], spec: ModelSpec) -> nn.Module:
    # imported here: relucut.finegrained's package imports this module
    from relucut.finegrained.aux import AuxExit, AuxHead, check_aux_model, stage_channels

    after = step["after"]
    check_aux_model(model, after)
    head = AuxHead(stage_channels(model, after, spec.input_size), spec.num_classes)
    return AuxExit(model, head, after)


def apply_structure(model: nn.Module, structure: Sequence[dict[str, Any]], spec: ModelSpec) -> nn.Module:
    """``model`` (spec-built) with the recipe's structure ops applied in order."""
    for step in structure:
        check_structure_op(step)
        if step["op"] == "replace_block":
            model = _replace_block(model, step)
        else:
            model = _aux_exit(model, step, spec)
    return model


# -- reduction --------------------------------------------------------------------------------
def _site_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if is_site_node(n, modules)]


def _site_transforms(gm: fx.GraphModule) -> list[dict[str, Any]]:
    dropped, masked = [], []
    for node in _site_nodes(gm):
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if type(module) is ReLUSite and module.mode == "identity":
            dropped.append(node.name)
        elif type(module) is ReLUSite and module.mode == "mask":
            masked.append(node.name)
    steps = []
    if dropped:
        steps.append({"op": "drop_sites", "sites": dropped})
    if masked:
        steps.append({"op": "partial_sites", "sites": masked})
    return steps


def _replay_step(gm: fx.GraphModule, step: dict[str, Any], input_size: tuple[int, ...]) -> None:
    nodes = {n.name: n for n in gm.graph.nodes}
    if step["op"] == "drop_modules":
        for name in step["nodes"]:
            node = nodes.get(name)
            if node is None or node.op != "call_module" or not isinstance(
                    gm.get_submodule(str(node.target)), IDENTITY_MODULES):
                raise RelucutError(f"recipe does not fit the model: node '{name}' is not an identity module")
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        finish_rewrite(gm)
        return
    if step["op"] in ("drop_sites", "partial_sites"):
        for name in step["sites"]:
            node = nodes.get(name)
            module = gm.get_submodule(str(node.target)) if node is not None and node.op == "call_module" else None
            if type(module) is not ReLUSite:
                raise RelucutError(f"recipe does not fit the model: site '{name}' is not a planned ReLU site")
            if step["op"] == "drop_sites":
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
            else:
                shape = tuple(node.meta["tensor_meta"].shape[1:])
                gm.add_submodule(str(node.target), PartialReLU.from_mask(module.mask, shape))
        finish_rewrite(gm)
        return
    try:
        apply_transform(gm, step)
    except (KeyError, ValueError) as exc:
        raise RelucutError(f"recipe does not fit the model: {exc}") from None


def reduce_model(model: nn.Module, input_size: tuple[int, ...], merge: bool = True, force: bool = False,
                 bias_maps: bool = False) -> tuple[fx.GraphModule, list[dict[str, Any]]]:
    """The exported form of a plan-applied ``model`` and the transforms that made it.

    By default the graph holds plain modules only (Conv2d, Linear, BatchNorm2d where no conv
    precedes it, ReLU sites, PartialReLU, pooling, add, flatten); ``bias_maps`` also allows merges
    that need a per-position bias constant (a ``get_attr`` node plus an add)."""
    gm = trace(copy.deepcopy(model)).eval()
    propagate_shapes(gm, input_size)  # once: every rewrite keeps the shapes on its nodes
    steps = _site_transforms(gm)
    identities = [n.name for n in gm.graph.nodes if n.op == "call_module" and len(n.args) == 1
                  and isinstance(gm.get_submodule(str(n.target)), IDENTITY_MODULES)]
    if identities:
        steps.append({"op": "drop_modules", "nodes": identities})
    for step in steps:
        _replay_step(gm, step, input_size)
    pairs = fold_bn_pairs(gm)
    if pairs:
        step = {"op": "fold_bn", "pairs": pairs}
        _replay_step(gm, step, input_size)
        steps.append(step)
    if merge:
        steps += plan_and_merge(gm, input_size, force=force, bias_maps=bias_maps)
    return gm.eval(), steps


def replay(model: nn.Module, transforms: list[dict[str, Any]], input_size: tuple[int, ...]) -> fx.GraphModule:
    """Applies recorded ``transforms`` to a plan-applied ``model`` (weights come afterwards)."""
    gm = trace(copy.deepcopy(model)).eval()
    propagate_shapes(gm, input_size)
    for step in transforms:
        _replay_step(gm, step, input_size)
    return gm.eval()


def planned_model(spec: ModelSpec, plan: ReLUPlan, seed: int = 0,
                  structure: Sequence[dict[str, Any]] = ()) -> nn.Module:
    """The base model of ``spec``, its ``structure`` ops applied, then ``plan`` (checked against
    the sites and shapes of the structured model)."""
    torch.manual_seed(seed)
    base = apply_structure(spec.build(), structure, spec)
    plan.validate(find_sites(base, spec.input_size))
    return apply_plan(base, plan).eval()


def _check_masks(model: nn.Module, plan: ReLUPlan) -> None:
    for node in _site_nodes(trace(model)):
        decision = plan.decisions.get(node.name)
        if decision is None or decision.mask is None:
            continue
        module = model.get_submodule(str(node.target))
        if not torch.equal(module.mask.cpu(), decision.mask):
            raise RelucutError(f"the checkpoint's mask at site '{node.name}' differs from the plan's; "
                               "export with the plan the checkpoint was trained under")


def _counts(report: CostReport) -> dict[str, Any]:
    return {"relus": report.relus, "relus_full": report.relus_full, "relus_without_stem": report.relus_without_stem,
            "macs": report.macs, "params": report.params, "conv_depth": report.conv_depth}


def _onnx_bytes(gm: nn.Module, input_size: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    example = torch.zeros((1, *input_size))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(gm, (example,), buffer, dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes=ONNX_BATCH_AXES)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; all mean "not exportable"
        raise RelucutError(f"ONNX export failed ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                           "pass --no-onnx to write the recipe and state_dict only") from None
    return buffer.getvalue()


@dataclass
class ExportResult:
    out_dir: Path
    recipe: Recipe
    model: fx.GraphModule
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # what write_export writes


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export_dir(out))):
        raise RelucutError(f"'{out}' exists and is not a relucut export; choose a new --out directory")


def _write_dir(out: Path, files: dict[str, bytes]) -> None:
    """Writes ``files`` into ``out`` all at once: readers see the old export or the new one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    old = None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.parent / f"{tmp.name}.old"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.replace(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_export(
    model_spec: ModelSpec,
    plan: ReLUPlan,
    state_dict: dict[str, torch.Tensor] | None,
    out_dir: str | Path,
    *,
    structure: Sequence[dict[str, Any]] = (),
    merge: bool = True,
    force_merge: bool = False,
    bias_maps: bool = False,
    onnx: bool = True,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> ExportResult:
    """Everything :func:`export_model` writes, checked and built in memory; nothing is written."""
    out = Path(out_dir)
    _check_out_dir(out)
    structure = [dict(step) for step in structure]
    applied = planned_model(model_spec, plan, seed, structure)
    if state_dict is not None:
        load_weights(applied, state_dict)
        _check_masks(applied, plan)
    input_size = model_spec.input_size
    reduced, transforms = reduce_model(applied, input_size, merge=merge, force=force_merge, bias_maps=bias_maps)
    before, after = count(applied, input_size), count(reduced, input_size)
    if after.relus != before.relus:
        raise AssertionError("exported ReLU count differs from the plan's")  # a relucut bug, not user error
    recipe = Recipe(model_spec, plan, transforms, structure, _counts(before), _counts(after),
                    {"relucut": relucut.__version__, "merge": merge, "force_merge": force_merge,
                     "bias_maps": bias_maps, "fresh_weights_seed": None if state_dict is not None else seed,
                     "input_size": list(input_size), **(meta or {})})
    buffer = io.BytesIO()
    torch.save(reduced.state_dict(), buffer)
    files = {RECIPE_FILE: recipe_bytes(recipe), MODEL_FILE: buffer.getvalue()}
    if onnx:
        files[ONNX_FILE] = _onnx_bytes(reduced, input_size)
    return ExportResult(out, recipe, reduced, files)


def write_export(result: ExportResult, extra_files: dict[str, bytes] | None = None) -> ExportResult:
    """Writes the export (and ``extra_files`` beside it) as one directory, swapped in whole."""
    _check_out_dir(result.out_dir)
    _write_dir(result.out_dir, {**result.files, **(extra_files or {})})
    return result


def export_model(model_spec: ModelSpec, plan: ReLUPlan, state_dict: dict[str, torch.Tensor] | None,
                 out_dir: str | Path, **options: Any) -> ExportResult:
    """Exports ``model_spec`` with its ``structure`` ops and ``plan`` applied, with weights
    ``state_dict`` of that model (None: fresh weights from ``seed``), into ``out_dir``.
    ``options`` are :func:`build_export`'s (structure, merge, force_merge, bias_maps, onnx, seed,
    meta). Everything is checked and built before anything is written."""
    return write_export(build_export(model_spec, plan, state_dict, out_dir, **options))


def export_run(run: str | Path, out_dir: str | Path, **options: Any) -> ExportResult:
    """Exports a trained relucut run: a run directory (its best.pt, else last.pt) or a checkpoint file.

    The model spec and plan come from the run's config and the weights from its checkpoint, so the
    export is the network that was trained and selected; the recipe's meta records the run, the
    epochs its weights had trained and the input normalization (mean, std) they expect.
    ``options`` go to ``export_model`` (merge, force_merge, bias_maps, onnx)."""
    from relucut.train.checkpoint import find_checkpoint, read_checkpoint
    from relucut.train.config import TrainConfig

    file = find_checkpoint(run)
    ckpt = read_checkpoint(file)
    config = TrainConfig.from_dict(ckpt["config"])
    plan = config.plan if config.plan is not None else ReLUPlan()
    state = ckpt.get("state") or {}
    meta = {"run": str(run), "checkpoint": str(file), "dataset": config.dataset,
            "epochs_trained": state.get("epoch"),
            "normalize": {"mean": list(ckpt.get("mean", ())), "std": list(ckpt.get("std", ()))}}
    return export_model(config.spec(), plan, ckpt["model"], out_dir, meta=meta, **options)


def recipe_bytes(recipe: Recipe) -> bytes:
    return json.dumps(recipe.to_dict(), indent=1).encode()


def load_export(path: str | Path) -> fx.GraphModule:
    """Rebuilds any exported network (eval mode) from its recipe and state_dict:
    spec -> structure ops -> plan -> replayed transforms -> weights."""
    path = Path(path)
    recipe = Recipe.load(path)
    weights = path / MODEL_FILE if path.is_dir() else path.parent / MODEL_FILE
    applied = planned_model(recipe.model, recipe.plan, structure=recipe.structure)
    gm = replay(applied, recipe.transforms, recipe.model.input_size)
    load_weights(gm, load_checkpoint(weights), what=f"state_dict {weights}")
    gm.relucut_recipe = recipe
    return gm.eval()


__all__ = [
    "BLOCK_REPLACEMENTS", "ExportResult", "apply_structure", "build_export", "build_replacement",
    "export_model", "export_run", "load_checkpoint", "load_export", "reduce_model", "replacement_kind",
    "replay", "write_export",
]

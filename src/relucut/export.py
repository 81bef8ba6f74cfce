"""Export: a physically reduced network whose private-inference ReLU count is the plan's.

Structure ops first change the spec-built model's architecture (``apply_structure``: a block
replaced by its shallow form, an auxiliary exit). ``reduce_model`` then turns the plan-applied
model into an fx graph of plain ops: dropped sites are removed, masked sites become
``PartialReLU`` (gather -> ReLU -> scatter; with a polynomial, its positions gathered too), BNs
fold into their convs, and linear layers merge where that is exact (``relucut.merge``). A dropped
site whose positions compute a polynomial stays: its ``ReLUSite`` is the per-channel polynomial. ``export_model`` writes ``recipe.json`` (model spec,
structure, plan, transforms, counts, and the sha256 of every other file), ``model.pt`` (the
reduced state_dict) and ``model.onnx`` (dynamic batch axis); ``load_export`` rebuilds any export by
replaying its recipe, after checking each file against its recorded hash. No pickles.

An export never replaces, unless ``force``, a folder holding the export of another network (another
model, structure or plan), nor, ever, a folder that holds something else. Weights or outputs that
are not finite are refused: a diverged network is never exported.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
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
)
from relucut.models.registry import ModelSpec
from relucut.plan import ReLUPlan, apply_plan, check_made_for
from relucut.recipe import RECIPE_FILE, Recipe, file_hash, is_export_dir, recorded_files
from relucut.rundir import json_text, write_failure
from relucut.site_module import POLY_KIND, PartialReLU, ReLUSite
from relucut.sites import find_sites, is_site_node, trace
from relucut.structure import apply_structure

MODEL_FILE = "model.pt"
IDENTITY_MODULES = (nn.Identity, nn.Dropout)  # in eval mode both pass their input through
ONNX_FILE = "model.onnx"
ONNX_BATCH_AXES = {"input": {0: "batch"}, "output": {0: "batch"}}  # any batch size at inference


# -- checkpoints ------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, spec: ModelSpec | None = None,
                    plan: ReLUPlan | None = None) -> dict[str, torch.Tensor]:
    """A state_dict from ``path``: a plain state_dict, or a dict holding one under "model".

    A relucut training checkpoint also records its model and plan: given ``spec`` and ``plan``,
    one trained as another network is refused (its weights could fit and still mean another net)."""
    path = Path(path)
    if not path.is_file():
        raise RelucutError(f"checkpoint '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise RelucutError(f"cannot read checkpoint '{path}' ({exc.__class__.__name__}); "
                           "pass a file written by torch.save") from None
    trained = isinstance(data, dict) and isinstance(data.get("config"), dict)
    if spec is not None and plan is not None and trained:
        _check_trained_as(path, data["config"], spec, plan)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise RelucutError(f"checkpoint '{path}' holds no state_dict (expected tensors, or a dict with 'model')")
    return dict(data)


def _check_trained_as(path: Path, config: dict[str, Any], spec: ModelSpec, plan: ReLUPlan) -> None:
    """Refuses exporting a training checkpoint as another model or under another plan than its own."""
    from relucut.train.config import TrainConfig  # here: relucut.train imports this module's users

    trained = TrainConfig.from_dict(config)
    theirs = trained.plan if trained.plan is not None else ReLUPlan()
    if trained.spec().to_dict() != spec.to_dict():
        raise RelucutError(f"checkpoint '{path}' was trained as {trained.spec().name} "
                           f"{trained.spec().to_dict()}, not as the model given here; export its run instead "
                           "(relucut export RUN_DIR), or pass the model options it was trained with")
    if theirs.to_dict()["sites"] != plan.to_dict()["sites"]:
        raise RelucutError(f"checkpoint '{path}' was trained under another plan than the one given; "
                           "export its run instead (relucut export RUN_DIR: it brings its own plan), or pass "
                           "the plan it was trained with")


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


# -- reduction --------------------------------------------------------------------------------
def _site_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if is_site_node(n, modules)]


def _site_transforms(gm: fx.GraphModule) -> list[dict[str, Any]]:
    dropped, masked = [], []
    for node in _site_nodes(gm):
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if type(module) is ReLUSite and module.mode == "identity" and module.poly is None:
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
            wanted = "identity" if step["op"] == "drop_sites" else "mask"
            if type(module) is not ReLUSite or module.mode != wanted or (wanted == "identity" and module.poly is not None):
                raise RelucutError(f"recipe does not fit the model: site '{name}' is not a planned ReLU site")
            if step["op"] == "drop_sites":
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
            else:
                shape = tuple(node.meta["tensor_meta"].shape[1:])
                gm.add_submodule(str(node.target), PartialReLU.from_mask(module.mask, shape, module.poly))
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
    check_made_for(plan, spec)
    torch.manual_seed(seed)
    built = spec.build()
    base = apply_structure(built, structure, spec)
    plan.validate(find_sites(base, spec.input_size))
    applied = apply_plan(base, plan).eval()
    adapted = getattr(built, "relucut_input_conv", None)  # a first conv made to read the dataset's channels
    if adapted is not None:
        applied.relucut_input_conv = adapted
    return applied


def _adapted_input(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """The recipe's record of a first conv relucut made read ``spec.in_chans`` channels (a factory
    without in_chans), so that a replay that adapts another conv is refused."""
    path = getattr(model, "relucut_input_conv", None)
    return {} if path is None else {"adapted_input_conv": {"path": path, "in_channels": spec.in_chans}}


def _check_adapted_input(model: nn.Module, recipe: Recipe) -> None:
    recorded = recipe.meta.get("adapted_input_conv")
    if isinstance(recorded, dict) and recorded != _adapted_input(model, recipe.model).get("adapted_input_conv"):
        now = getattr(model, "relucut_input_conv", None)
        raise RelucutError(f"the export's first conv '{recorded.get('path')}' was made to read "
                           f"{recorded.get('in_channels')} channels, but {recipe.model.name} now builds "
                           f"{f'its first conv at {now!r}' if now else 'one that reads them itself'}; "
                           "the factory changed: export the network again")


def _check_masks(model: nn.Module, plan: ReLUPlan) -> None:
    for node in _site_nodes(trace(model)):
        decision = plan.decisions.get(node.name)
        if decision is None:
            continue
        module = model.get_submodule(str(node.target))
        if decision.mask is not None and not torch.equal(module.mask.cpu(), decision.mask):
            raise RelucutError(f"the checkpoint's mask at site '{node.name}' differs from the plan's; "
                               "export with the plan the checkpoint was trained under")
        if decision.poly is not None and not torch.equal(module.poly.cpu(), decision.poly):
            raise RelucutError(f"the checkpoint's polynomial at site '{node.name}' differs from the plan's; "
                               "export with the plan the checkpoint was trained under")


def _counts(report: CostReport) -> dict[str, Any]:
    poly = report.nonlinear_by_kind.get(POLY_KIND, 0)
    return {"relus": report.relus, "relus_full": report.relus_full, "relus_without_stem": report.relus_without_stem,
            "macs": report.macs, "params": report.params, "conv_depth": report.conv_depth,
            **({POLY_KIND: poly} if poly else {})}


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
    force: bool = False  # replace an export of another network


def network_of(recipe: dict[str, Any]) -> dict[str, Any]:
    """What makes an export's network the same network: its model, structure ops and plan sites."""
    plan = recipe.get("plan") if isinstance(recipe.get("plan"), dict) else {}
    return json.loads(json.dumps({"model": recipe.get("model"), "structure": recipe.get("structure") or [],
                                  "sites": plan.get("sites")}))


def _check_out_dir(out: Path, recipe: Recipe | None = None, force: bool = False) -> None:
    """``out`` may be new, empty, or an export of the same network as ``recipe`` (or any export with
    ``force``); a folder holding anything else is never replaced."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_export_dir(out))):
        raise RelucutError(f"'{out}' exists and is not a relucut export; choose a new --out directory")
    if force or recipe is None or not is_export_dir(out):
        return
    try:
        theirs = json.loads((out / RECIPE_FILE).read_text())
        name = theirs["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise RelucutError(f"'{out}' holds a damaged export (unreadable {RECIPE_FILE}); pass --force to "
                           "replace it, or choose another --out") from None
    old, new = network_of(theirs), network_of(recipe.to_dict())
    differs = [what for key, what in (("model", "model options"), ("structure", "structure"), ("sites", "plan"))
               if old[key] != new[key]]
    if differs:
        raise RelucutError(f"'{out}' holds the export of another network ({name}, with other "
                           f"{' and '.join(differs)}); pass --force to replace it, or choose another --out")


def _write_dir(out: Path, files: dict[str, bytes]) -> None:
    """Writes ``files`` into ``out`` all at once: readers see the old export or the new one."""
    tmp = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.parent / f"{tmp.name}.old"
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as exc:
        if old is not None and not out.exists():
            os.replace(old, out)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_failure(getattr(exc, "filename", None) or out, exc) from None
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
    force: bool = False,
) -> ExportResult:
    """Everything :func:`export_model` writes, checked and built in memory; nothing is written.
    ``force``: replace an export of another network at ``out_dir``."""
    out = Path(out_dir)
    structure = [dict(step) for step in structure]
    _check_out_dir(out)
    applied = planned_model(model_spec, plan, seed, structure)
    if state_dict is not None:
        _check_finite_weights(state_dict)
        load_weights(applied, state_dict)
        _check_masks(applied, plan)
    _check_out_dir(out, Recipe(model_spec, plan, structure=structure), force)  # inputs first, then --out
    input_size = model_spec.input_size
    reduced, transforms = reduce_model(applied, input_size, merge=merge, force=force_merge, bias_maps=bias_maps)
    before, after = count(applied, input_size), count(reduced, input_size)
    if after.relus != before.relus or after.nonlinear_by_kind.get(POLY_KIND) != before.nonlinear_by_kind.get(POLY_KIND):
        raise AssertionError("exported ReLU or polynomial count differs from the plan's")  # a relucut bug
    _check_finite_output(reduced, input_size)
    recipe = Recipe(model_spec, plan, transforms, structure, _counts(before), _counts(after),
                    {"relucut": relucut.__version__, "merge": merge, "force_merge": force_merge,
                     "bias_maps": bias_maps, "fresh_weights_seed": None if state_dict is not None else seed,
                     "input_size": list(input_size), **_adapted_input(applied, model_spec), **(meta or {})})
    buffer = io.BytesIO()
    torch.save(reduced.state_dict(), buffer)
    files = {MODEL_FILE: buffer.getvalue()}
    if onnx:
        files[ONNX_FILE] = _onnx_bytes(reduced, input_size)
    return ExportResult(out, recipe, reduced, _with_recipe(recipe, files), force)


def _with_recipe(recipe: Recipe, files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` and recipe.json, which records the sha256 of each of them."""
    files = {name: data for name, data in files.items() if name != RECIPE_FILE}
    recipe.files = {name: file_hash(data) for name, data in files.items()}
    return {RECIPE_FILE: recipe_bytes(recipe), **files}


def _check_finite_weights(state_dict: dict[str, torch.Tensor]) -> None:
    broken = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise RelucutError(f"the weights hold NaN or infinite values ({', '.join(broken[:3])}"
                           f"{' ...' if len(broken) > 3 else ''}): the network diverged and is not exported; "
                           "train it again with a lower learning rate")


def _check_finite_output(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """The exported network answers finite logits on a random input (huge finite weights can overflow)."""
    probe = torch.randn((2, *input_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(probe)
    if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
        raise RelucutError("the network's outputs are NaN or infinite on a test input: it diverged and is "
                           "not exported; train it again with a lower learning rate")


def write_export(result: ExportResult, extra_files: dict[str, bytes] | None = None) -> ExportResult:
    """Writes the export (and ``extra_files`` beside it, hashed in recipe.json too) as one directory,
    swapped in whole."""
    _check_out_dir(result.out_dir, result.recipe, result.force)
    if extra_files:
        result.files = _with_recipe(result.recipe, {**result.files, **extra_files})
    _write_dir(result.out_dir, result.files)
    return result


def export_model(model_spec: ModelSpec, plan: ReLUPlan, state_dict: dict[str, torch.Tensor] | None,
                 out_dir: str | Path, **options: Any) -> ExportResult:
    """Exports ``model_spec`` with its ``structure`` ops and ``plan`` applied, with weights
    ``state_dict`` of that model (None: fresh weights from ``seed``), into ``out_dir``.
    ``options`` are :func:`build_export`'s (structure, merge, force_merge, bias_maps, onnx, seed,
    meta). Everything is checked and built before anything is written."""
    return write_export(build_export(model_spec, plan, state_dict, out_dir, **options))


def export_run(run: str | Path, out_dir: str | Path, *, trusted_factories: Sequence[str] = (),
               **options: Any) -> ExportResult:
    """Exports a trained relucut run: a run directory (its best.pt, else last.pt) or a checkpoint file.

    The model spec and plan come from the run's config and the weights from its checkpoint, so the
    export is the network that was trained and selected; the recipe's meta records the run, the
    epochs its weights had trained and the input normalization (mean, std) they expect.
    ``options`` go to ``export_model`` (merge, force_merge, bias_maps, onnx, force).
    ``trusted_factories``: ``package.module:factory`` names the run's config may name (see
    :func:`relucut.models.registry.trust_factory`)."""
    from relucut.models.registry import trust_factory
    from relucut.train.checkpoint import find_checkpoint, read_checkpoint
    from relucut.train.config import TrainConfig

    trust_factory(*trusted_factories)
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
    return json_text(recipe.to_dict(), where=RECIPE_FILE).encode()


def verify_export(path: str | Path, need: Sequence[str] = ()) -> list[str]:
    """What is wrong with the export at ``path``, one problem a line; empty when it is intact.

    Intact: recipe.json is a relucut recipe recording a sha256 for each of its files, every file
    it records is there with that hash, and every file in ``need`` (e.g. "model.onnx") is among
    them. Reads only bytes: no factory is imported, so any export can be checked."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    try:
        data = json.loads((folder / RECIPE_FILE).read_text())
    except FileNotFoundError:
        return [f"no {RECIPE_FILE} in '{folder}'"]
    except (OSError, ValueError) as exc:
        return [f"{RECIPE_FILE} is unreadable ({exc.__class__.__name__})"]
    if not isinstance(data, dict) or data.get("format") != "relucut.recipe":
        return [f"{RECIPE_FILE} is not a relucut recipe"]
    try:
        files = recorded_files(data)
    except RelucutError as exc:
        return [str(exc)]
    if not files:
        return [f"{RECIPE_FILE} records no file hashes (written by an older relucut); export it again"]
    problems = [f"{name} is not recorded in {RECIPE_FILE}" for name in need if name not in files]
    for name, digest in files.items():
        try:
            actual = file_hash((folder / name).read_bytes())
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        except OSError as exc:
            problems.append(f"{name} is unreadable ({exc.strerror})")
            continue
        if actual != digest:
            problems.append(f"{name} differs from the sha256 recorded in {RECIPE_FILE} (damaged or changed)")
    return problems


def export_intact(path: str | Path, need: Sequence[str] = ()) -> bool:
    """Whether :func:`verify_export` finds nothing wrong: the export can be reused as it is."""
    return not verify_export(path, need)


def load_export(path: str | Path, *, trusted_factories: Sequence[str] = ()) -> fx.GraphModule:
    """Rebuilds any exported network (eval mode) from its recipe and state_dict:
    spec -> structure ops -> plan -> replayed transforms -> weights.

    Every file the recipe records a hash for must match it (exports from before hashes load
    unchecked). A ``package.module:factory`` model must be trusted first: named in this process,
    in ``trusted_factories`` or in ``$RELUCUT_TRUSTED_FACTORIES``; nothing the recipe names is
    imported otherwise."""
    from relucut.models.registry import trust_factory

    trust_factory(*trusted_factories)
    path = Path(path)
    recipe = Recipe.load(path)
    if recipe.files:
        problems = verify_export(path)
        if problems:
            where = path if path.is_dir() else path.parent
            raise RelucutError(f"'{where}' is a damaged export: {'; '.join(problems)}; export it again")
    weights = path / MODEL_FILE if path.is_dir() else path.parent / MODEL_FILE
    applied = planned_model(recipe.model, recipe.plan, structure=recipe.structure)
    _check_adapted_input(applied, recipe)
    gm = replay(applied, recipe.transforms, recipe.model.input_size)
    load_weights(gm, load_checkpoint(weights), what=f"state_dict {weights}")
    gm.relucut_recipe = recipe
    return gm.eval()


__all__ = [
    "ExportResult", "build_export",
    "export_intact", "export_model", "export_run", "load_checkpoint", "load_export", "reduce_model",
    "replay", "verify_export", "write_export",
]

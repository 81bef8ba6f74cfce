"""Finding every ReLU call site of a model with torch.fx, and giving each a stable address.

A site is one *call* of a ReLU: an ``nn.ReLU`` module called twice is two sites, and
``F.relu``/``torch.relu``/``x.relu()`` calls are sites too. Its name is the fx node name
(``s1_0_relu1``, ``layer1_0_relu_1``), stable across re-tracing, as torchvision's feature
extraction uses them. Sites are grouped into stages (the model's declared stages for zoo
models, otherwise runs of equal spatial resolution) and blocks (the enclosing module).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from relucut.errors import RelucutError
from relucut.site_module import ReLUSite, is_site_module

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
RELU_METHODS = {"relu", "relu_"}


class SiteTracer(fx.Tracer):
    """Keeps ReLU site modules (``nn.ReLU`` and relucut's ``ReLUSite``) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_site_module(m) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically traces ``model`` with site modules kept as leaves."""
    tracer = SiteTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise RelucutError(
            f"torch.fx cannot trace {type(model).__name__} ({exc.__class__.__name__}: {exc}); "
            "relucut needs an fx-traceable forward (no data-dependent Python control flow)"
        ) from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    _copy_relucut_attrs(model, gm)
    return gm


def _copy_relucut_attrs(src: nn.Module, dst: nn.Module) -> None:
    for attr in ("stage_names", "stage_aliases", "relucut_site_paths"):
        if hasattr(src, attr):
            setattr(dst, attr, copy.copy(getattr(src, attr)))


def is_site_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return is_site_module(modules[node.target])
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in RELU_METHODS
    return False


@dataclass(frozen=True)
class Site:
    """One ReLU call site."""

    name: str  # fx node name: the stable address plans use
    op: str  # fx op: call_module, call_function or call_method
    module_path: str  # the ReLU module's path, or the enclosing module's for functional calls
    shape: tuple[int, ...]  # per-sample output shape, (C,H,W) for images
    stage: str
    block: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict:
        return asdict(self)


class SiteMap:
    """The ordered ReLU sites of a model, with their stages and blocks."""

    def __init__(self, sites: list[Site], stage_names: tuple[str, ...]):
        self.sites = sites
        self.by_name = {s.name: s for s in sites}
        used = [s.stage for s in sites]
        self.stage_names = tuple(stage_names) or tuple(dict.fromkeys(used))

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    def __getitem__(self, name: str) -> Site:
        try:
            return self.by_name[name]
        except KeyError:
            raise RelucutError(f"the model has no ReLU site '{name}'; {self._names_hint()}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def _names_hint(self) -> str:
        names = [s.name for s in self.sites]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"its {len(names)} sites are: {shown} ('relucut count MODEL --json' lists them)"

    def in_stage(self, stage: str) -> list[Site]:
        return [s for s in self.sites if s.stage == stage]

    def check_stages(self, stages: list[str], option: str) -> None:
        for stage in stages:
            if stage not in self.stage_names:
                raise RelucutError(
                    f"unknown stage '{stage}' in {option}; this model's stages are: {', '.join(self.stage_names)}"
                )


def _example_input(model: nn.Module, input_size: tuple[int, ...]) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.zeros((1, *input_size), device=device)


def _module_path(node: fx.Node, gm: fx.GraphModule) -> str:
    site_paths = getattr(gm, "relucut_site_paths", {})
    if node.name in site_paths:
        return site_paths[node.name]
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        return next(reversed(stack.values()))[0]
    return ""


def _zoo_stage(path: str, stage_names: tuple[str, ...], aliases: dict[str, str]) -> str | None:
    top = path.split(".")[0]
    top = aliases.get(top, top)
    return top if top in stage_names else None


def _block_of(path: str, stage: str, zoo: bool) -> str:
    parts = path.split(".")
    if zoo:
        # zoo stages are Sequentials of blocks: s1.0.relu1 -> block s1.0; the stem is one block
        return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else stage
    return ".".join(parts[:-1]) if len(parts) > 1 else (parts[0] or stage)


def find_sites(model: nn.Module, input_size: tuple[int, ...]) -> SiteMap:
    """Traces ``model`` and returns its ReLU sites with shapes for one input of ``input_size``."""
    gm = trace(model)
    return sites_of_traced(gm, input_size)


@torch.no_grad()
def sites_of_traced(gm: fx.GraphModule, input_size: tuple[int, ...]) -> SiteMap:
    was_training = gm.training
    gm.eval()
    try:
        ShapeProp(gm).propagate(_example_input(gm, input_size))
    except Exception as exc:
        raise RelucutError(
            f"a forward pass at input size {tuple(input_size)} failed ({exc.__class__.__name__}: {exc}); "
            "check --dataset / the input size the model expects"
        ) from None
    finally:
        gm.train(was_training)
    modules = dict(gm.named_modules())
    stage_names = tuple(getattr(gm, "stage_names", ()))
    aliases = dict(getattr(gm, "stage_aliases", {}))
    raw = []
    for node in gm.graph.nodes:
        if not is_site_node(node, modules):
            continue
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise RelucutError(f"ReLU site '{node.name}' does not output a single tensor; relucut cannot count it")
        raw.append((node, _module_path(node, gm), tuple(meta.shape[1:])))
    sites = []
    if stage_names:
        for node, path, shape in raw:
            stage = _zoo_stage(path, stage_names, aliases)
            if stage is None:
                raise RelucutError(
                    f"ReLU site '{node.name}' ({path}) is outside the model's declared stages {stage_names}"
                )
            sites.append(Site(node.name, node.op, path, shape, stage, _block_of(path, stage, zoo=True)))
    else:  # stages are runs of equal spatial resolution
        stage_index, last_res = 0, None
        for node, path, shape in raw:
            res = tuple(shape[1:])
            if res != last_res:
                stage_index, last_res = stage_index + 1, res
            stage = f"s{stage_index}"
            sites.append(Site(node.name, node.op, path, shape, stage, _block_of(path, stage, zoo=False)))
    return SiteMap(sites, stage_names)


def sitify(model: nn.Module) -> fx.GraphModule:
    """Returns an fx copy of ``model`` in which every ReLU call site is its own ``ReLUSite``.

    Each new module is registered at the top level under the site's name, so re-tracing gives
    the same names. This makes sites addressable that module swapping cannot reach: functional
    calls and a module called more than once.
    """
    gm = trace(copy.deepcopy(model))
    modules = dict(gm.named_modules())
    site_paths = dict(getattr(gm, "relucut_site_paths", {}))
    site_nodes = [n for n in gm.graph.nodes if is_site_node(n, modules)]
    for node in site_nodes:
        site_paths.setdefault(node.name, _module_path(node, gm))
    replaced = {str(n.target) for n in site_nodes if n.op == "call_module"}
    for node in site_nodes:
        existing = getattr(gm, node.name, None)
        if existing is not None and node.name not in replaced and not is_site_module(existing):
            raise RelucutError(f"cannot address site '{node.name}': the model has an attribute of that name")
        current = modules[node.target] if node.op == "call_module" else None
        site = current if isinstance(current, ReLUSite) else ReLUSite()
        gm.add_submodule(node.name, copy.deepcopy(site) if current is site else site)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(node.name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        new.name = node.name
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    gm.relucut_site_paths = site_paths
    return gm

"""Finding every ReLU call site of a model with torch.fx, and giving each a stable address.

A site is one *call* of a ReLU: an ``nn.ReLU`` module called twice is two sites, and
``F.relu``/``torch.relu``/``x.relu()`` calls are sites too. Its name is the fx node name
(``s1_0_relu1``, ``layer1_0_relu_1``), stable across re-tracing, as torchvision's feature
extraction uses them. Sites are grouped into stages (the model's declared stages for zoo
models, otherwise runs of equal spatial resolution) and blocks (the enclosing module).
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import math
import operator
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from relucut.errors import RelucutError
from relucut.kinds import COMPARISON_KINDS, activations, extra_nonlinearities, full_shape
from relucut.site_module import ReLU6Site, ReLUSite, is_pool_site_module, is_site_module

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
RELU_METHODS = {"relu", "relu_"}

# -- kinds of non-linearity ----------------------------------------------------------------------
# Every op below costs a comparison (a garbled circuit / OT millionaires' instance) or more in 2PC.
LINEARIZABLE_KINDS = ("relu", "relu6")  # plan sites: keep, drop (identity) or mask
POOL_KIND = "maxpool"  # plan sites too: keep, or swap for average pooling
# comparisons per output element; maxpool and clamp depend on the call (window, bounds)
COMPARISONS_PER_ELEMENT = {"relu": 1, "relu6": 2, "hardtanh": 2, "leaky_relu": 1, "prelu": 1, "threshold": 1,
                           "hardshrink": 2, "softshrink": 2, **COMPARISON_KINDS}
# the rest is priced per element by each protocol's approximation ("smooth" in CostReport and
# Workload): smooth functions, normalizations (a reciprocal square root per row), softmax (max, exp,
# division per row), and (relucut.kinds) products and divisions of two activations, matmul in MACs
SMOOTH_KINDS = ("gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "softmax", "log_softmax",
                "mish", "elu", "selu", "celu", "softplus", "log_sigmoid", "softsign", "layernorm", "groupnorm",
                "rmsnorm", "exp", "log", "sqrt", "rsqrt", "reciprocal", "div", "erf", "pow", "mul", "matmul",
                "poly2")  # poly2: positions of a linearized ReLU site computing c2*x^2 + c1*x + c0

_MODULE_KINDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], str], ...] = (
    (nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.Hardtanh, "hardtanh"),  # ReLU6 subclasses Hardtanh
    (nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "prelu"), (nn.Threshold, "threshold"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
      nn.AdaptiveMaxPool3d), POOL_KIND),
    (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"),
    (nn.Hardswish, "hardswish"), (nn.Hardsigmoid, "hardsigmoid"), ((nn.Softmax, nn.Softmax2d), "softmax"),
    (nn.LogSoftmax, "log_softmax"), (nn.Mish, "mish"), (nn.ELU, "elu"), (nn.SELU, "selu"), (nn.CELU, "celu"),
    (nn.Softplus, "softplus"), (nn.LogSigmoid, "log_sigmoid"), (nn.Softsign, "softsign"), (nn.Softmin, "softmax"),
    (nn.Hardshrink, "hardshrink"), (nn.Softshrink, "softshrink"), (nn.LayerNorm, "layernorm"),
    (nn.GroupNorm, "groupnorm"), (nn.RMSNorm, "rmsnorm"),
)
MAXPOOL_FUNCTIONS = {
    F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, torch.max_pool1d: 1, torch.max_pool2d: 2,
    torch.max_pool3d: 3, F.max_pool1d_with_indices: 1, F.max_pool2d_with_indices: 2, F.max_pool3d_with_indices: 3,
}
ADAPTIVE_MAXPOOL_FUNCTIONS = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}
_FUNCTION_KINDS = {
    **{fn: "relu" for fn in RELU_FUNCTIONS},
    F.relu6: "relu6", F.hardtanh: "hardtanh", F.hardtanh_: "hardtanh", torch.clamp: "clamp", torch.clip: "clamp",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu", F.prelu: "prelu", torch.prelu: "prelu",
    F.threshold: "threshold",
    **{fn: POOL_KIND for fn in (*MAXPOOL_FUNCTIONS, *ADAPTIVE_MAXPOOL_FUNCTIONS)},
    F.gelu: "gelu", F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    F.tanh: "tanh", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.softmax: "softmax",
    torch.softmax: "softmax", F.scaled_dot_product_attention: "softmax", F.log_softmax: "log_softmax", torch.log_softmax: "log_softmax", F.mish: "mish",
    F.elu: "elu", F.selu: "selu", torch.selu: "selu", F.celu: "celu", F.softplus: "softplus",
    F.logsigmoid: "log_sigmoid", F.softsign: "softsign", F.softmin: "softmax", F.hardshrink: "hardshrink",
    F.softshrink: "softshrink", F.layer_norm: "layernorm", torch.layer_norm: "layernorm", F.group_norm: "groupnorm",
    torch.group_norm: "groupnorm", F.instance_norm: "groupnorm", F.rms_norm: "rmsnorm",
}
_METHOD_KINDS = {
    **{m: "relu" for m in RELU_METHODS}, "clamp": "clamp", "clamp_": "clamp", "clip": "clamp", "clip_": "clamp",
    "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh", "tanh_": "tanh", "softmax": "softmax",
    "log_softmax": "log_softmax", "softmin": "softmax",
}


def module_kind(module: nn.Module) -> str | None:
    if getattr(module, "relucut_site", False):
        return getattr(module, "site_kind", "relu")
    if getattr(module, "relucut_pool_site", False):
        return "avgpool"  # a swapped max-pool: still its site, no longer a non-linearity
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):  # per-instance statistics unless it keeps running ones
        return None if module.track_running_stats and module.running_mean is not None else "groupnorm"
    for types, kind in _MODULE_KINDS:
        if isinstance(module, types):
            return kind
    return None


def node_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The kind of non-linearity ``node`` computes ('relu', 'relu6', 'maxpool', 'gelu', ...), or None."""
    if node.op == "call_module":
        return module_kind(modules[node.target])
    if node.op == "call_function":
        return _FUNCTION_KINDS.get(node.target)
    if node.op == "call_method":
        return _METHOD_KINDS.get(node.target)
    return None


class SiteTracer(fx.Tracer):
    """Keeps site modules (ReLU, ReLU6, relucut's sites, max-pools) and known non-linearities as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (is_site_module(m) or is_pool_site_module(m) or module_kind(m) is not None
                or super().is_leaf_module(m, qualname))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts every submodule in eval mode, then restores each one's own mode (mixed modes survive)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically traces ``model`` in eval mode with site modules kept as leaves.

    Eval mode because traced-through code bakes ``self.training`` into the graph (timm's
    BatchNormAct2d): relucut counts and exports inference, where batch-norm uses running stats.
    """
    tracer = SiteTracer()
    try:
        with eval_mode(model):
            graph = tracer.trace(model)
    except Exception as exc:
        raise RelucutError(
            f"torch.fx cannot trace {type(model).__name__} ({exc.__class__.__name__}: {exc}); "
            "relucut needs an fx-traceable forward (no data-dependent Python control flow)"
        ) from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.training = model.training  # the root only: submodules are shared with model and keep their own
    _copy_relucut_attrs(model, gm)
    return gm


def _copy_relucut_attrs(src: nn.Module, dst: nn.Module) -> None:
    for attr in ("stage_names", "stage_aliases", "relucut_site_paths", "relucut_input_conv"):
        if hasattr(src, attr):
            setattr(dst, attr, copy.copy(getattr(src, attr)))


def is_site_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A ReLU-like call site a plan can keep, drop or mask (ReLU, ReLU6, relucut's site modules)."""
    return node_kind(node, modules) in LINEARIZABLE_KINDS


def is_pool_site_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A 2-D max-pool call a plan can swap for average pooling (or one it swapped)."""
    if node.op == "call_module":
        return is_pool_site_module(modules[node.target])
    if node.op == "call_function" and node.target in (F.max_pool2d, F.adaptive_max_pool2d):
        args = _call_args(node)
        return not args.get("return_indices", False) and args.get("dilation", 1) in (1, (1, 1), [1, 1])
    return False


_POOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ADAPTIVE_PARAMS = ("input", "output_size", "return_indices")


def _call_args(node: fx.Node) -> dict:
    """A functional pool call's arguments by name (positional ones named as F.max_pool2d does)."""
    names = _ADAPTIVE_PARAMS if node.target in ADAPTIVE_MAXPOOL_FUNCTIONS else _POOL_PARAMS
    return {**dict(zip(names, node.args)), **node.kwargs}


def _per_sample_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if not hasattr(meta, "shape") and isinstance(meta, (tuple, list)) and meta:  # (values, indices) pools
        meta = meta[0]
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else None


def _window(kernel, dims: int) -> int:
    kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
    return math.prod(int(k) for k in kernel)


def _adaptive_comparisons(in_size: tuple[int, ...], out_size: tuple[int, ...]) -> int:
    """Comparisons of an adaptive max-pool per channel: each window's size minus one, summed."""
    def lengths(n_in: int, n_out: int) -> list[int]:  # torch's window bounds per output index
        return [-(-((i + 1) * n_in) // n_out) - (i * n_in) // n_out for i in range(n_out)]

    windows = itertools.product(*(lengths(i, o) for i, o in zip(in_size, out_size)))
    return sum(math.prod(sizes) - 1 for sizes in windows)


def _maxpool_comparisons(node: fx.Node, modules: dict[str, nn.Module], shape: tuple[int, ...]) -> int:
    """(window - 1) comparisons per output element; adaptive pools window by window."""
    module = modules.get(str(node.target)) if node.op == "call_module" else None
    in_shape = _per_sample_shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)) or (
            module is None and node.target in ADAPTIVE_MAXPOOL_FUNCTIONS):
        dims = len(shape) - 1
        return shape[0] * _adaptive_comparisons(tuple(in_shape[-dims:]), tuple(shape[-dims:]))
    if module is not None:
        dims = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}.get(type(module), len(shape) - 1)
        kernel = module.kernel_size
    else:
        dims, kernel = MAXPOOL_FUNCTIONS[node.target], _call_args(node)["kernel_size"]
    return math.prod(shape) * (_window(kernel, dims) - 1)


def _clamp_bounds(node: fx.Node) -> int:
    bounds = list(node.args[1:3]) + [node.kwargs.get("min"), node.kwargs.get("max")]
    return sum(b is not None for b in bounds)


def comparisons_of(node: fx.Node, kind: str, modules: dict[str, nn.Module], shape: tuple[int, ...]) -> int | None:
    """ReLU-equivalent comparisons of one call, or None for a smooth kind (priced per protocol)."""
    if kind == POOL_KIND:
        return _maxpool_comparisons(node, modules, shape)
    if kind == "clamp":
        return math.prod(shape) * _clamp_bounds(node)
    if kind == "avgpool":
        return 0
    per = COMPARISONS_PER_ELEMENT.get(kind)
    return None if per is None else math.prod(shape) * per


@dataclass(frozen=True)
class Site:
    """One plan site: a ReLU-like call (relu, relu6) or a max-pool (maxpool, or avgpool once swapped)."""

    name: str  # fx node name: the stable address plans use
    op: str  # fx op: call_module, call_function or call_method
    module_path: str  # the module's path, or the enclosing module's for functional calls
    shape: tuple[int, ...]  # per-sample output shape, (C,H,W) for images
    stage: str
    block: str
    kind: str = "relu"
    gate: bool = False  # an attention / squeeze-excite gate off the main path (user models)
    comparisons: int = -1  # ReLU-equivalent comparisons when kept in full; -1: as many as elements

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def full_comparisons(self) -> int:
        return self.numel if self.comparisons < 0 else self.comparisons

    @property
    def is_pool(self) -> bool:
        return self.kind in (POOL_KIND, "avgpool")

    def to_dict(self) -> dict:
        return {**asdict(self), "comparisons": self.full_comparisons}


@dataclass(frozen=True)
class Nonlinearity:
    """A non-linearity that is counted and priced but not a plan site (GELU, LeakyReLU, Hardtanh, ...)."""

    name: str
    kind: str
    op: str
    module_path: str
    shape: tuple[int, ...]
    comparisons: int | None  # None: a smooth kind, its cost is the protocol's
    elements: int | None = None  # where not the output's (fused attention: its softmax's, L x S per head)

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.elements is None else self.elements

    def to_dict(self) -> dict:
        return asdict(self)


class SiteMap:
    """The ordered ReLU-like sites of a model with stages and blocks; its max-pool sites and the
    other non-linearities beside them."""

    def __init__(self, sites: list[Site], stage_names: tuple[str, ...], pools: list[Site] = (),
                 others: list[Nonlinearity] = (), module_stages: dict[str, str] | None = None):
        self.sites = sites
        self.pools = list(pools)
        self.others = list(others)
        self.module_stages = dict(module_stages or {})  # user models: module path -> stage (zoo: by name)
        self.by_name = {s.name: s for s in (*sites, *self.pools)}
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
        pools = f"; max-pool sites: {', '.join(p.name for p in self.pools[:4])}" if self.pools else ""
        return f"its {len(names)} sites are: {shown}{pools} ('relucut count MODEL --json' lists them)"

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
    """Traces ``model`` and returns its sites with shapes for one input of ``input_size``."""
    gm = trace(model)
    return sites_of_traced(gm, input_size)


def propagate(gm: fx.GraphModule, input_size: tuple[int, ...]) -> None:
    """Shape propagation in eval mode; a failure is one RelucutError line, without the traceback
    torch's ShapeProp prints to stderr before re-raising."""
    try:
        with eval_mode(gm), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(_example_input(gm, input_size))
    except Exception as exc:
        cause = exc.__cause__ or exc  # ShapeProp wraps the real error in a RuntimeError naming the node
        raise RelucutError(
            f"a forward pass at input size {tuple(input_size)} failed ({cause.__class__.__name__}: "
            f"{str(cause).splitlines()[0] if str(cause) else ''}); check --dataset / the input size the model expects"
        ) from None


@dataclass
class _Found:
    node: fx.Node
    kind: str
    path: str
    shape: tuple[int, ...]
    comparisons: int | None
    elements: int | None = None
    extra: bool = False  # found by relucut.kinds: counted, never a plan site

    @property
    def is_site(self) -> bool:
        return self.kind in LINEARIZABLE_KINDS and not self.extra


def _attention_softmax(node: fx.Node) -> int | None:
    """Softmax elements inside F.scaled_dot_product_attention: per sample, query rows x key rows."""
    if node.target is not F.scaled_dot_product_attention or len(node.args) < 2:
        return None
    query, key = (_per_sample_shape(a) if isinstance(a, fx.Node) else None for a in node.args[:2])
    return math.prod(query[:-1]) * key[-2] if query and key else None


def _collect(gm: fx.GraphModule) -> list[_Found]:
    """Every non-linearity and pool site of a shape-propagated graph, in graph order."""
    modules = dict(gm.named_modules())
    live = activations(gm)
    found = []
    for node in gm.graph.nodes:
        kind = node_kind(node, modules)
        if kind is not None:
            shape = _per_sample_shape(node)
            if shape is None:
                raise RelucutError(f"{kind} call '{node.name}' does not output a tensor; relucut cannot count it")
            whole = full_shape(node)
            if kind not in (*LINEARIZABLE_KINDS, POOL_KIND, "avgpool") and whole and whole[0] != 1:
                shape = whole  # sequence-first or batch-folded (windows, heads): the batch of one is not dim 0
            found.append(_Found(node, kind, _module_path(node, gm), shape, comparisons_of(node, kind, modules, shape),
                                _attention_softmax(node)))
        found += [_Found(node, e.kind, _module_path(node, gm), e.shape, e.comparisons, e.elements, extra=True)
                  for e in extra_nonlinearities(node, modules, live)]
    return found


def _spatial(node: fx.Node) -> int:
    shape = _per_sample_shape(node) if isinstance(node, fx.Node) else None
    return math.prod(shape[1:]) if shape else 1


_MULS = {operator.mul, operator.imul, torch.mul}


def _is_gate(found: _Found, modules: dict[str, nn.Module], max_depth: int = 8) -> bool:
    """A squeeze-excite / attention gate: a 1x1 (or vector) site whose result, a few ops on,
    multiplies a feature map that is larger than 1x1. Those ReLUs are not the main path's."""
    if math.prod(found.shape[1:]) != 1:
        return False
    frontier, seen = [found.node], set()
    for _ in range(max_depth):
        nxt = []
        for node in frontier:
            for user in node.users:
                if user in seen:
                    continue
                seen.add(user)
                is_mul = (user.op == "call_function" and user.target in _MULS) or (
                    user.op == "call_method" and user.target in ("mul", "mul_"))
                if is_mul and any(_spatial(a) > 1 for a in user.all_input_nodes):
                    return True
                if not is_site_node(user, modules):  # another ReLU starts its own question
                    nxt.append(user)
        frontier = nxt
    return False


def _zoo_stages(found: list[_Found], stage_names: tuple[str, ...], aliases: dict[str, str]) -> list[str]:
    stages, current = [], stage_names[0] if stage_names else "s1"
    for f in found:
        stage = _zoo_stage(f.path, stage_names, aliases)
        if stage is None and f.is_site:
            raise RelucutError(
                f"ReLU site '{f.node.name}' ({f.path}) is outside the model's declared stages {stage_names}"
            )
        current = stage or current  # pools and others outside stages go with the stage before them
        stages.append(current)
    return stages


def _resolution_stages(found: list[_Found], gates: list[bool]) -> list[str]:
    """User models: main-path ReLU sites in runs of equal resolution; gates ('<stage>.gate'), pools
    and other non-linearities go with the main-path stage before them (the first one if none)."""
    main = [f for f, g in zip(found, gates) if f.is_site and not g]
    index, last_res, run_of = 0, None, {}
    for f in main:
        if f.shape[1:] != last_res:
            index, last_res = index + 1, f.shape[1:]
        run_of[id(f)] = f"s{index}"
    current = run_of[id(main[0])] if main else "s1"
    stages = []
    for f, gate in zip(found, gates):
        current = run_of.get(id(f), current)
        stages.append(f"{current}.gate" if gate else current)
    return stages


def _module_stages(gm: fx.GraphModule, found: list[_Found], stages: list[str]) -> dict[str, str]:
    """User models: each module goes with the next plan site after it in graph order (a conv with the
    ReLU it feeds); modules after the last site with the last site's stage."""
    stage_of = {f.node: stage for f, stage in zip(found, stages) if f.is_site}
    out: dict[str, str] = {}
    pending: list[str] = []
    for node in gm.graph.nodes:
        path = _module_path(node, gm) if node.op in ("call_module", "call_function", "call_method") else ""
        if path and path not in out and path not in pending:
            pending.append(path)
        if node in stage_of:
            out.update(dict.fromkeys(pending, stage_of[node]))
            pending = []
    if stage_of:
        out.update(dict.fromkeys(pending, list(stage_of.values())[-1]))
    return out


@torch.no_grad()
def sites_of_traced(gm: fx.GraphModule, input_size: tuple[int, ...]) -> SiteMap:
    propagate(gm, input_size)
    modules = dict(gm.named_modules())
    stage_names = tuple(getattr(gm, "stage_names", ()))
    found = _collect(gm)
    if stage_names:  # zoo models declare their stages; no gate guessing there
        gates = [False] * len(found)
        stages = _zoo_stages(found, stage_names, dict(getattr(gm, "stage_aliases", {})))
    else:
        gates = [f.is_site and _is_gate(f, modules) for f in found]
        stages = _resolution_stages(found, gates)
    sites, pools, others = [], [], []
    for f, gate, stage in zip(found, gates, stages):
        block = _block_of(f.path, stage, zoo=bool(stage_names))
        if f.is_site:
            sites.append(Site(f.node.name, f.node.op, f.path, f.shape, stage, block, f.kind, gate, f.comparisons))
        elif f.kind in (POOL_KIND, "avgpool") and not f.extra and is_pool_site_node(f.node, modules):
            pools.append(Site(f.node.name, f.node.op, f.path, f.shape, stage, block, f.kind, False, f.comparisons))
        elif f.kind != "avgpool":
            others.append(Nonlinearity(f.node.name, f.kind, f.node.op, f.path, f.shape, f.comparisons, f.elements))
    module_stages = {} if stage_names else _module_stages(gm, found, stages)
    return SiteMap(sites, stage_names, pools, others, module_stages)


def _pool_module(node: fx.Node, current: nn.Module | None) -> nn.Module:
    """The module a pool site becomes under sitify: its own module, or one built from the call."""
    if current is not None:
        return current
    args = _call_args(node)
    if node.target is F.adaptive_max_pool2d:
        return nn.AdaptiveMaxPool2d(args["output_size"])
    return nn.MaxPool2d(args["kernel_size"], args.get("stride"), args.get("padding", 0), args.get("dilation", 1),
                        ceil_mode=args.get("ceil_mode", False))


def _site_module_for(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module:
    current = modules[node.target] if node.op == "call_module" else None
    if is_pool_site_node(node, modules):
        return _pool_module(node, current)
    if current is not None and getattr(current, "relucut_site", False):
        return current  # keeps its mode, mask, and kind
    return ReLU6Site() if node_kind(node, modules) == "relu6" else ReLUSite()


def site_modules(gm: fx.GraphModule) -> dict[str, str | None]:
    """Plan site name -> the path of the module a swap replaces, or None where no module swap
    reaches the site (a functional call, or a module called more than once)."""
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    return {node.name: str(node.target) if node.op == "call_module" and calls[str(node.target)] == 1 else None
            for node in gm.graph.nodes if is_site_node(node, modules) or is_pool_site_node(node, modules)}


def addressable(model: nn.Module) -> nn.Module:
    """``model`` itself when a module swap reaches every plan site (every zoo model), else
    ``sitify(model)``: the form in which plans and learnable masks change a model's sites.

    It depends on the architecture alone (not on which sites a plan names), so a network trained
    with masks or a plan, its checkpoint and its export's replay all take the same form and share
    state_dict keys. A model fx cannot trace is returned as it is: whatever needs its sites
    reports that in one line.
    """
    try:
        gm = trace(model)
    except RelucutError:
        return model
    return model if all(site_modules(gm).values()) else sitify(model)


def _keep_state(model: nn.Module, gm: fx.GraphModule) -> None:
    """Puts back the parameters and buffers of ``model`` that tracing left out of ``gm`` (those of
    modules its forward never calls, a traced-through module's unused buffers), so the sitified
    model's state_dict has every key of the model's own (site modules' state aside)."""
    sites = [path for path, m in model.named_modules() if path and (is_site_module(m) or is_pool_site_module(m))]
    have = set(gm.state_dict(keep_vars=True))
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key in have or any(key.startswith(site + ".") for site in sites):
            continue
        path, _, attr = key.rpartition(".")
        owner = gm
        for part in path.split(".") if path else ():
            if not isinstance(getattr(owner, part, None), nn.Module):
                owner.add_module(part, nn.Module())
            owner = getattr(owner, part)
        if isinstance(tensor, nn.Parameter):
            owner.register_parameter(attr, tensor)
        else:
            owner.register_buffer(attr, tensor)


def sitify(model: nn.Module) -> fx.GraphModule:
    """Returns an fx copy of ``model`` in which every plan site is its own module.

    ReLU calls become ``ReLUSite``, ReLU6 calls ``ReLU6Site``, functional 2-D max-pools an
    ``nn.MaxPool2d``. Each new module is registered at the top level under the site's name, so
    re-tracing gives the same names. This makes sites addressable that module swapping cannot
    reach: functional calls and a module called more than once. Every parameter and buffer keeps
    its key, so the model's state_dict loads into its sitified form.
    """
    model = copy.deepcopy(model)
    gm = trace(model)
    modules = dict(gm.named_modules())
    site_paths = dict(getattr(gm, "relucut_site_paths", {}))
    site_nodes = [n for n in gm.graph.nodes if is_site_node(n, modules) or is_pool_site_node(n, modules)]
    for node in site_nodes:
        site_paths.setdefault(node.name, _module_path(node, gm))
    replaced = {str(n.target) for n in site_nodes if n.op == "call_module"}
    for node in site_nodes:
        existing = getattr(gm, node.name, None)
        if existing is not None and node.name not in replaced and not is_site_module(existing):
            raise RelucutError(f"cannot address site '{node.name}': the model has an attribute of that name")
        site = _site_module_for(node, modules)
        current = modules[node.target] if node.op == "call_module" else None
        gm.add_submodule(node.name, copy.deepcopy(site) if current is site else site)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(node.name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        new.name = node.name
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    _keep_state(model, gm)
    gm.relucut_site_paths = site_paths
    return gm

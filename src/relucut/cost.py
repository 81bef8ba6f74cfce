"""Exact cost accounting: ReLUs per site/block/stage, MACs of convs, linear layers and attention,
parameters, and every other non-linearity by kind.

Counts are per single input. A site counts only the ReLUs it really evaluates: a dropped site
counts 0 and a masked one counts its ones, whether the plan is applied to the model or passed
alongside it. ``relus`` counts ReLU-like activations (ReLU and ReLU6 elements); ``comparisons``
is what a 2PC engine pays in ReLU-equivalent comparisons: ReLU 1, ReLU6 and Hardtanh 2,
LeakyReLU/PReLU 1 per element, max-pooling (window - 1) per output, max reductions (reduced
elements - outputs). The kinds a protocol prices per element (GELU, SiLU, sigmoid, softmax,
LayerNorm, exp, division and products of two activations, ...: ``relucut.sites.SMOOTH_KINDS``) are
counted by element in ``smooth_by_kind`` (``matmul``: MACs of activation x activation products,
which ``macs`` also holds). MACs are counted with attention on its math path, so fused attention
kernels do not hide them. Positions of a dropped or masked site that compute a polynomial
(``poly2``: one secret square each) are their own per-element kind, never ReLUs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from relucut.kinds import math_attention
from relucut.plan import ReLUPlan
from relucut.site_module import POLY_KIND
from relucut.sites import Nonlinearity, Site, SiteMap, eval_mode, is_site_node, sites_of_traced, trace

# flop_counter op names of convolutions and linear layers (a Linear lowers to mm/addmm/bmm)
LINEAR_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")


@dataclass
class SiteCost:
    site: Site
    relus: int  # active ReLU-like elements per input (0 at a pool site)
    comparisons: int = -1  # ReLU-equivalent comparisons it costs; -1: as many as relus

    def __post_init__(self) -> None:
        if self.comparisons < 0:
            self.comparisons = self.relus

    @property
    def total(self) -> int:
        return self.site.numel


@dataclass
class CostReport:
    """What a network costs: its ReLUs (by site, block, stage), MACs, parameters and depth."""

    input_size: tuple[int, ...]
    sites: list[SiteCost]
    stage_names: tuple[str, ...]
    macs_by_module: dict[str, int]
    params: int
    conv_depth: int
    meta: dict[str, Any] = field(default_factory=dict)
    pools: list[SiteCost] = field(default_factory=list)  # max-pool sites (avgpool once swapped)
    others: list[Nonlinearity] = field(default_factory=list)  # counted, not plan sites
    # output elements of each conv/linear (MAC-counted) module and average pool: what a fixed-point
    # 2PC engine must rescale (truncate) after multiplying by weights or 1/window
    outputs_by_module: dict[str, int] = field(default_factory=dict)
    module_stages: dict[str, str] = field(default_factory=dict)  # user models: module path -> stage

    @property
    def truncations(self) -> int:
        return sum(self.outputs_by_module.values())

    @property
    def linear_layers(self) -> int:
        """Conv/linear modules (each one fixed-point rescale in 2PC)."""
        return len(self.macs_by_module)

    @property
    def comparisons(self) -> int:
        """ReLU-equivalent comparisons per input: what the non-linear layers cost in 2PC."""
        return sum(self.comparisons_by_kind.values())

    @property
    def nonlinear_by_kind(self) -> dict[str, int]:
        """Per kind: elements of activations (relu, relu6, gelu, ...), comparisons of 'maxpool'."""
        out = {"relu": 0}
        for s in self.sites:
            out[s.site.kind] = out.get(s.site.kind, 0) + s.relus
        for p in self.pools:
            if p.site.kind == "maxpool":
                out["maxpool"] = out.get("maxpool", 0) + p.comparisons
        for o in self.others:
            out[o.kind] = out.get(o.kind, 0) + (o.comparisons if o.kind == "maxpool" else o.numel)
        return {k: n for k, n in out.items() if n or k == "relu"}  # a kind a plan removed is gone

    @property
    def comparisons_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in (*self.sites, *self.pools):
            if s.site.kind != "avgpool":
                out[s.site.kind] = out.get(s.site.kind, 0) + s.comparisons
        for o in self.others:
            if o.comparisons is not None:
                out[o.kind] = out.get(o.kind, 0) + o.comparisons
        return out

    @property
    def smooth_by_kind(self) -> dict[str, int]:
        """Elements of smooth non-linearities (GELU, SiLU, sigmoid, ...): priced per protocol."""
        out: dict[str, int] = {}
        for o in self.others:
            if o.comparisons is None:
                out[o.kind] = out.get(o.kind, 0) + o.numel
        return out

    @property
    def comparison_layers(self) -> int:
        """Layers that compare (each waits on the network in 2PC): sites, pools and others with any."""
        counted = [s.comparisons for s in (*self.sites, *self.pools)] + [o.comparisons or 0 for o in self.others]
        return sum(1 for c in counted if c > 0)

    def smooth_layers(self, kinds: set[str] | None = None) -> int:
        return sum(1 for o in self.others if o.comparisons is None and (kinds is None or o.kind in kinds))

    @property
    def activation_macs(self) -> int:
        """MACs of products of two activations (attention's Q·Kᵀ and A·V): part of ``macs``, but a 2PC
        engine cannot evaluate them as it does weights (no weight to encrypt or garble with)."""
        return self.smooth_by_kind.get("matmul", 0)

    @property
    def weight_macs(self) -> int:
        """MACs with a weight or constant operand: convolutions and linear layers."""
        return max(self.macs - self.activation_macs, 0)

    @property
    def relus(self) -> int:
        return sum(s.relus for s in self.sites)

    @property
    def relus_full(self) -> int:
        return sum(s.total for s in self.sites)

    @property
    def relus_without_stem(self) -> int:
        """ReLUs outside the stem: the count of the same network without a stem ReLU, as the SNL
        authors' ResNet18 is built (491,520 at 32x32 against relucut's 557,056), so published
        tables compare either way."""
        return sum(s.relus for s in self.sites if s.site.stage != "stem")

    @property
    def macs(self) -> int:
        return sum(self.macs_by_module.values())

    @property
    def relus_by_stage(self) -> dict[str, int]:
        out = {stage: 0 for stage in self.stage_names}
        for s in self.sites:
            out[s.site.stage] = out.get(s.site.stage, 0) + s.relus
        return out

    @property
    def relus_by_block(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            out[s.site.block] = out.get(s.site.block, 0) + s.relus
        return out

    @property
    def macs_by_stage(self) -> dict[str, int]:
        """MACs by stage: a zoo model's by its stage modules (the head under 'other'), a user model's by
        ``module_stages`` (each module with the next plan site after it); a model without plan sites
        (a ViT) by its top-level modules."""
        out: dict[str, int] = defaultdict(int)
        for path, macs in self.macs_by_module.items():
            top = path.split(".")[0]
            if top in self.stage_names:
                out[top] += macs
            elif self.stage_names or self.module_stages:
                out[self._module_stage(path)] += macs
            else:
                out[top or "other"] += macs
        return dict(out)

    def _module_stage(self, path: str) -> str:
        while path:
            if path in self.module_stages:
                return self.module_stages[path]
            path = path.rpartition(".")[0]
        return "other"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.meta,
            "input_size": list(self.input_size),
            "relus": self.relus,
            "relus_full": self.relus_full,
            "relus_without_stem": self.relus_without_stem,
            "relus_by_stage": self.relus_by_stage,
            "relus_by_block": self.relus_by_block,
            "macs": self.macs,
            "macs_by_stage": self.macs_by_stage,
            "macs_by_module": self.macs_by_module,
            "params": self.params,
            "conv_depth": self.conv_depth,
            "comparisons": self.comparisons,
            "nonlinear_by_kind": self.nonlinear_by_kind,
            "comparisons_by_kind": self.comparisons_by_kind,
            "smooth_by_kind": self.smooth_by_kind,
            "activation_macs": self.activation_macs,
            "sites": [_site_entry(s) for s in self.sites],
            "pools": [_site_entry(p) for p in self.pools],
            "nonlinear": [o.to_dict() for o in self.others],
        }


KIND_LABELS = {"gelu": "GELU", "silu": "SiLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "Hardswish",
               "hardsigmoid": "Hardsigmoid", "softmax": "Softmax", "log_softmax": "LogSoftmax", "mish": "Mish",
               "elu": "ELU", "selu": "SELU", "celu": "CELU", "softplus": "Softplus", "log_sigmoid": "LogSigmoid",
               "softsign": "Softsign", "layernorm": "LayerNorm", "groupnorm": "GroupNorm", "rmsnorm": "RMSNorm",
               "div": "division by an activation", "mul": "activation products",
               "matmul": "activation matmul MACs", "poly2": "polynomial (x^2) positions"}


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def _site_entry(cost: SiteCost) -> dict[str, Any]:
    return {**cost.site.to_dict(), "relus": cost.relus, "total": cost.total, "comparisons": cost.comparisons}


def _site_relus(site: Site, gm: fx.GraphModule, plan: ReLUPlan | None) -> int:
    if plan is not None and site.name in plan.decisions:
        return plan.active(site)
    if site.op == "call_module":
        node = next(n for n in gm.graph.nodes if n.name == site.name)
        module = gm.get_submodule(str(node.target))
        if hasattr(module, "active_relus"):
            return int(module.active_relus(site.shape))
    return site.numel


def _site_poly(site: Site, gm: fx.GraphModule, plan: ReLUPlan | None) -> Nonlinearity | None:
    """The positions of ``site`` that compute a polynomial, as a counted non-linearity (or None)."""
    if plan is not None and site.name in plan.decisions:
        elements = plan.poly_elements(site)
    elif site.op == "call_module":
        node = next(n for n in gm.graph.nodes if n.name == site.name)
        module = gm.get_submodule(str(node.target))
        elements = int(module.poly_elements(site.shape)) if hasattr(module, "poly_elements") else 0
    else:
        elements = 0
    if not elements:
        return None
    return Nonlinearity(site.name, POLY_KIND, site.op, site.module_path, site.shape, None, elements)


def _site_cost(site: Site, gm: fx.GraphModule, plan: ReLUPlan | None) -> SiteCost:
    relus = _site_relus(site, gm, plan)
    per_element = site.full_comparisons // max(site.numel, 1)  # ReLU 1, ReLU6 2
    return SiteCost(site, relus, relus * per_element)


def _pool_cost(site: Site, plan: ReLUPlan | None) -> SiteCost:
    swapped = site.kind == "avgpool" or (plan is not None and plan.decision(site.name).action == "avgpool")
    return SiteCost(site, 0, 0 if swapped else site.full_comparisons)


@torch.no_grad()
def _macs_by_module(model: nn.Module, example: torch.Tensor,
                    outputs: dict[str, int] | None = None) -> dict[str, int]:
    """MACs per module that multiplies itself (a leaf, or a module whose own code calls matmul or
    attention); fills ``outputs`` with the output elements of those and of average pools."""
    root = type(model).__name__
    seen: dict[str, int] = defaultdict(int)

    def record(name: str):
        def hook(_module, _args, out):
            if isinstance(out, torch.Tensor) and out.dim() > 0:
                seen[name] += out[:1].numel()  # per input
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n] if outputs is not None else []
    try:
        with math_attention(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    out: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name != root and not name.startswith(root + "."):
            continue
        flops = sum(v for op, v in ops.items() if str(op).split(".")[1] in LINEAR_OPS)
        if flops:
            out[name[len(root) + 1:]] = flops // 2  # the root module itself: ""
    # parents include their descendants' counts: keep what each module multiplies itself. A descendant
    # counts against its nearest counted ancestor (a GraphModule calls s1.0.conv without calling s1.0)
    own = dict(out)
    for name, macs in out.items():
        ancestor = _nearest(name, out)
        if ancestor is not None:
            own[ancestor] -= macs
    leaves = {name: macs for name, macs in own.items() if macs > 0}
    if outputs is not None:
        pools = {n for n, m in model.named_modules() if isinstance(m, (nn.modules.pooling._AvgPoolNd, *_ADAPTIVE_AVG))}
        outputs.update({n: seen[n] for n in [*leaves, *sorted(pools)] if seen.get(n)})
    return leaves


def _nearest(path: str, counted: dict[str, int]) -> str | None:
    """The nearest proper ancestor of module ``path`` in ``counted`` (the root is ""), or None."""
    while path:
        path = path.rpartition(".")[0]
        if path in counted:
            return path
    return None


_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def conv_depth(gm: fx.GraphModule) -> int:
    """Convolutions on the longest path from input to output (DeepReDuce's '#Conv')."""
    modules = dict(gm.named_modules())
    depth: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        here = 0
        if node.op == "call_module" and isinstance(modules[node.target], nn.modules.conv._ConvNd):
            here = 1
        elif node.op == "call_function" and "conv" in getattr(node.target, "__name__", ""):
            here = 1
        depth[node] = here + max((depth[p] for p in node.all_input_nodes), default=0)
    return max(depth.values(), default=0)


def count(model: nn.Module, input_size: tuple[int, ...], plan: ReLUPlan | None = None) -> CostReport:
    """Counts what ``model`` costs per input of ``input_size`` (C,H,W), optionally under ``plan``."""
    input_size = tuple(int(v) for v in input_size)
    gm = trace(model)
    sites: SiteMap = sites_of_traced(gm, input_size)
    if plan is not None:
        plan.validate(sites)
    with eval_mode(model):
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        outputs: dict[str, int] = {}
        macs = _macs_by_module(model, torch.zeros((1, *input_size), device=device), outputs)
    return CostReport(
        input_size=input_size,
        sites=[_site_cost(s, gm, plan) for s in sites],
        stage_names=sites.stage_names,
        macs_by_module=macs,
        params=sum(p.numel() for p in model.parameters()),
        conv_depth=conv_depth(gm),
        pools=[_pool_cost(p, plan) for p in sites.pools],
        others=list(sites.others) + [poly for poly in (_site_poly(s, gm, plan) for s in sites) if poly is not None],
        outputs_by_module=outputs,
        module_stages=sites.module_stages,
    )


__all__ = ["CostReport", "SiteCost", "count", "conv_depth", "is_site_node"]

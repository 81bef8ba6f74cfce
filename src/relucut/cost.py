"""Exact cost accounting: ReLUs per site/block/stage, MACs of convs and linear layers, parameters.

Counts are per single input. A site counts only the ReLUs it really evaluates: a dropped site
counts 0 and a masked one counts its ones, whether the plan is applied to the model or passed
alongside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from relucut.plan import ReLUPlan
from relucut.sites import Site, SiteMap, is_site_node, sites_of_traced, trace

# flop_counter op names of convolutions and linear layers (a Linear lowers to mm/addmm/bmm)
LINEAR_OPS = ("convolution", "mm", "addmm", "bmm", "baddbmm")


@dataclass
class SiteCost:
    site: Site
    relus: int  # active ReLUs per input

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

    @property
    def relus(self) -> int:
        return sum(s.relus for s in self.sites)

    @property
    def relus_full(self) -> int:
        return sum(s.total for s in self.sites)

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
        """MACs attributed to stages by module path; modules outside stages go under 'other'."""
        out: dict[str, int] = defaultdict(int)
        for path, macs in self.macs_by_module.items():
            top = path.split(".")[0]
            out[top if top in self.stage_names else "other"] += macs
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.meta,
            "input_size": list(self.input_size),
            "relus": self.relus,
            "relus_full": self.relus_full,
            "relus_by_stage": self.relus_by_stage,
            "relus_by_block": self.relus_by_block,
            "macs": self.macs,
            "macs_by_stage": self.macs_by_stage,
            "macs_by_module": self.macs_by_module,
            "params": self.params,
            "conv_depth": self.conv_depth,
            "sites": [{**s.site.to_dict(), "relus": s.relus, "total": s.total} for s in self.sites],
        }


def _site_relus(site: Site, gm: fx.GraphModule, plan: ReLUPlan | None) -> int:
    if plan is not None and site.name in plan.decisions:
        return plan.active(site)
    if site.op == "call_module":
        node = next(n for n in gm.graph.nodes if n.name == site.name)
        module = gm.get_submodule(str(node.target))
        if hasattr(module, "active_relus"):
            return int(module.active_relus(site.shape))
    return site.numel


@torch.no_grad()
def _macs_by_module(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    root = type(model).__name__
    with FlopCounterMode(display=False) as counter:
        model(example)
    out: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name in ("Global", root) or not name.startswith(root + "."):
            continue
        flops = sum(v for op, v in ops.items() if str(op).split(".")[1] in LINEAR_OPS)
        if flops:
            out[name[len(root) + 1:]] = flops // 2
    # parents include their children's counts; keep the leaves only
    leaves = {k: v for k, v in out.items() if not any(o.startswith(k + ".") for o in out)}
    return leaves


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
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        macs = _macs_by_module(model, torch.zeros((1, *input_size), device=device))
    finally:
        model.train(was_training)
    return CostReport(
        input_size=input_size,
        sites=[SiteCost(s, _site_relus(s, gm, plan)) for s in sites],
        stage_names=sites.stage_names,
        macs_by_module=macs,
        params=sum(p.numel() for p in model.parameters()),
        conv_depth=conv_depth(gm),
    )


__all__ = ["CostReport", "SiteCost", "count", "conv_depth", "is_site_node"]

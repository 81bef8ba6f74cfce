"""SENet stage 1: per-layer ReLU sensitivity from pruning sensitivity (shallow paper eq. 1).

The whole network's conv weights are magnitude-pruned (one global threshold) to a parameter
density; a layer's pruning sensitivity eta_theta is the fraction of its weights that survive,
and the ReLU sensitivity of the ReLU it feeds is eta_alpha = 1 - eta_theta. Each ReLU is tied to
the conv that precedes it on its main path (after a residual add, the deeper of the two
branches' convs, i.e. the block's last conv rather than the shortcut projection).
"""

from __future__ import annotations

import torch
from torch import fx, nn

from relucut.errors import RelucutError
from relucut.finegrained.budget import allocate_layer_budgets
from relucut.sites import SiteMap, is_site_node, trace


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], nn.modules.conv._ConvNd)


def preceding_convs(model: nn.Module) -> dict[str, str]:
    """Site name -> module path of the conv preceding it."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    depth: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        depth[node] = int(_is_conv(node, modules)) + max((depth[p] for p in node.all_input_nodes), default=0)
    out = {}
    for node in gm.graph.nodes:
        if not is_site_node(node, modules):
            continue
        found, stack, seen = [], list(node.all_input_nodes), set()
        while stack:  # walk back to the nearest convs, not through another ReLU site
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            if _is_conv(cur, modules):
                found.append(cur)
            elif not is_site_node(cur, modules):
                stack.extend(cur.all_input_nodes)
        if not found:
            raise RelucutError(f"ReLU site '{node.name}' has no preceding conv; SENet sensitivity needs one")
        out[node.name] = str(max(found, key=lambda n: depth[n]).target)
    return out


@torch.no_grad()
def pruning_keep_fractions(model: nn.Module, density: float) -> dict[str, float]:
    """Conv path -> fraction of its weights kept when all conv weights are pruned globally by
    magnitude to ``density`` (the fraction of weights kept overall)."""
    if not 0.0 < density < 1.0:
        raise RelucutError(f"--density must be in (0, 1) (the fraction of weights pruning keeps), got {density}")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    magnitudes = torch.cat([m.weight.detach().abs().flatten().cpu() for m in convs.values()])
    keep = max(1, round(density * magnitudes.numel()))
    threshold = torch.topk(magnitudes, keep).values.min()
    return {n: float((m.weight.detach().abs().cpu() >= threshold).float().mean()) for n, m in convs.items()}


def relu_sensitivity(model: nn.Module, density: float, kept: dict[str, float] | None = None) -> dict[str, float]:
    """Site name -> eta_alpha = 1 - (fraction of the preceding conv's weights kept); ``kept``
    (conv path -> fraction) from another probe, e.g. sparse training, else one-shot pruning."""
    kept = kept if kept is not None else pruning_keep_fractions(model, density)
    return {site: 1.0 - kept[conv] for site, conv in preceding_convs(model).items()}


ALLOCATIONS = ("count", "density")


def layer_budgets(sites: SiteMap, sensitivity: dict[str, float], budget: int,
                  allocation: str = "count") -> dict[str, int]:
    """Per-site ReLU budgets summing exactly to ``budget``, each at most its site's size.

    ``allocation="count"`` (SENet's normalized sensitivity): a layer's ReLU *count* is
    eta_alpha / sum(eta_alpha) of the budget, so a large early layer gets a small fraction of its
    ReLUs, the shape of SENet's published per-layer lists (RLNet's ``sensitivity_list.yaml``).
    ``"density"``: the *fraction* of each layer kept is proportional to eta_alpha (counts
    eta_alpha x layer size), a much flatter profile. A layer that would exceed its size is capped
    and the excess shared out among the others.
    """
    if allocation not in ALLOCATIONS:
        raise RelucutError(f"unknown allocation '{allocation}'; use {' or '.join(ALLOCATIONS)}")
    sizes = {s.name: s.numel for s in sites}
    scale = (lambda s: 1) if allocation == "count" else (lambda s: s.numel)
    weights = {s.name: sensitivity[s.name] * scale(s) for s in sites}
    return allocate_layer_budgets(weights, sizes, budget)

"""ReLU budgets: parsing, checks, exact binarization of learned masks, per-layer allocation."""

from __future__ import annotations

import math

import torch

from relucut.errors import RelucutError
from relucut.finegrained.mask_site import LearnableMaskSite


def check_budget(budget: int, total: int) -> int:
    if budget <= 0:
        raise RelucutError(f"the ReLU budget must be > 0, got {budget}; pass --budget 25k or similar")
    if budget > total:
        raise RelucutError(
            f"the ReLU budget {budget:,} exceeds the network's {total:,} ReLUs; choose a budget below {total:,}"
        )
    return budget


def check_layer_budgets(sites, given: dict[str, int], budget: int) -> dict[str, int]:
    """A caller's per-site allocation (e.g. where another method's masks kept their ReLUs), checked."""
    sizes = {s.name: s.numel for s in sites}
    if set(given) != set(sizes):
        missing, extra = sorted(set(sizes) - set(given)), sorted(set(given) - set(sizes))
        raise RelucutError(f"layer_budget must name every ReLU site once (missing: {', '.join(missing) or '-'}; "
                           f"unknown: {', '.join(extra) or '-'}); see 'relucut sites MODEL'")
    over = [n for n, k in given.items() if not 0 <= int(k) <= sizes[n]]
    if over:
        raise RelucutError(f"layer_budget of {', '.join(over)} is outside 0..the site's ReLU count")
    if sum(int(k) for k in given.values()) != budget:
        raise RelucutError(f"layer_budget sums to {sum(given.values()):,}, not the budget {budget:,}")
    return {n: int(given[n]) for n in sizes}


def binarize_to_budget(masks: dict[str, LearnableMaskSite], budget: int,
                       tiebreak: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Global top-k over all mask entries, weighted by the ReLUs each stands for.

    Equal scores (SNL clamps many to exactly 0) are ordered by ``tiebreak`` (same shapes, larger
    first, e.g. how much each ReLU changes its input), never by position: a stable sort alone
    would hand the leftover slots to the first sites (the stem, then s1).

    Pixel masks hit the budget exactly. Channel masks (a channel costs H*W ReLUs) are filled
    greedily by score, skipping channels that no longer fit, so the total is <= budget and
    short by less than the cost of the smallest channel left out.
    """
    names = list(masks)
    scores = torch.cat([masks[n].scores.detach().flatten().cpu() for n in names])
    costs = torch.cat([torch.full((masks[n].scores.numel(),), masks[n].unit_relus) for n in names])
    total = int(costs.sum())
    check_budget(budget, total)
    order = torch.arange(scores.numel())
    if tiebreak is not None:
        secondary = torch.cat([tiebreak[n].detach().flatten().cpu().float() for n in names])
        order = torch.argsort(secondary, descending=True, stable=True)
    order = order[torch.argsort(scores[order], descending=True, stable=True)]
    chosen = torch.zeros_like(scores, dtype=torch.bool)
    if bool((costs == 1).all()):
        chosen[order[:budget]] = True
    else:
        left = budget
        for idx, cost in zip(order.tolist(), costs[order].tolist()):
            if cost <= left:
                chosen[idx] = True
                left -= cost
                if left == 0:
                    break
    out, start = {}, 0
    for n in names:
        size = masks[n].scores.numel()
        out[n] = chosen[start:start + size].view(masks[n].scores.shape)
        start += size
    return out


def allocate_layer_budgets(weights: dict[str, float], sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Splits ``budget`` over layers in proportion to ``weights``, capped at each layer's size.

    Integer shares by largest remainder; a layer that would exceed its size is capped and the
    excess is shared out again among the others. The result sums exactly to ``budget``.
    """
    check_budget(budget, sum(sizes.values()))
    alloc = {n: 0 for n in sizes}
    open_layers = [n for n in sizes if sizes[n] > 0]
    remaining = budget
    while remaining > 0:
        w = {n: max(float(weights.get(n, 0.0)), 0.0) for n in open_layers}
        if sum(w.values()) <= 0:  # no signal left: share by remaining room
            w = {n: float(sizes[n] - alloc[n]) for n in open_layers}
        norm = sum(w.values())
        exact = {n: remaining * w[n] / norm for n in open_layers}
        share = {n: math.floor(exact[n]) for n in open_layers}
        short = remaining - sum(share.values())
        for n in sorted(open_layers, key=lambda n: (-(exact[n] - share[n]), n))[:short]:
            share[n] += 1
        capped = False
        for n in open_layers:
            room = sizes[n] - alloc[n]
            take = min(share[n], room)
            alloc[n] += take
            remaining -= take
            capped |= take < share[n]
        open_layers = [n for n in open_layers if alloc[n] < sizes[n]]
        if not capped:
            break
    assert sum(alloc.values()) == budget
    return alloc

"""Linear-layer merging: exact BN folding, exact conv composition, and shallow replacements.

Once a plan drops a ReLU, the layers on either side of it form one affine map. This module
rewrites an fx graph so that such maps take fewer layers, and only where the result is exact:

* ``fold_bn``: a BatchNorm after a conv (the conv's only user) folds into the conv.
* ``merge``: chains of affine units (convs, BNs) with nothing else between them compose into one
  conv, and ``a(x) + b(x)`` / ``a(x) + x`` into one conv (the residual identity is a delta tap).

A composed conv zero-pads its input once, where the original pair zero-padded twice: the second
conv's padding reads zeros where the composition would see the first conv's response to real
pixels. Composition is therefore exact only when those "ghost" positions cannot see the image
(the second conv has no padding, or the first is a 1x1 conv without padding); the first conv's
bias becomes a per-position bias map where the second conv pads. Two padded 3x3 convs (a ResNet
basic block without its middle ReLU) never compose exactly; they also cost more MACs merged
(25 vs 18 per channel pair), which is why the shallow-network method retrains a
:func:`shallow_replacement` instead (inside :func:`shallow_shortcut_replacement`, which keeps the
block's shortcut and post-add ReLU). Weights are composed in float64.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_eval

BIAS_SUFFIX = "_bias"  # root buffers ``...mergedK_bias`` hold per-position bias maps
ADD_TARGETS = (operator.add, torch.add)


# -- the algebra ----------------------------------------------------------------------------
@dataclass
class Affine:
    """y = conv2d(x, weight, stride, padding, groups) + bias (per channel) + bias_map (C,H,W).

    Spatial geometry is fixed by ``in_shape``/``out_shape`` (per-sample C,H,W). ``macs`` is what
    the unit costs as it stands in the graph (a BN or an identity costs none).
    """

    weight: torch.Tensor | None  # (Co, Ci/groups, kh, kw); None while only planning
    bias: torch.Tensor | None
    bias_map: torch.Tensor | None
    has_bias: bool
    has_bias_map: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    kernel: tuple[int, int]
    groups: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    macs: int

    @property
    def conv_macs(self) -> int:
        co, ho, wo = self.out_shape
        return co * (self.in_shape[0] // self.groups) * self.kernel[0] * self.kernel[1] * ho * wo


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_affine(conv: nn.Conv2d, in_shape, out_shape, weights: bool) -> Affine | None:
    if (
        not isinstance(conv, nn.Conv2d)
        or isinstance(conv.padding, str)
        or conv.padding_mode != "zeros"
        or _pair(conv.dilation) != (1, 1)
    ):
        return None
    aff = Affine(
        weight=conv.weight.detach().double() if weights else None,
        bias=conv.bias.detach().double() if weights and conv.bias is not None else None,
        bias_map=None,
        has_bias=conv.bias is not None,
        has_bias_map=False,
        stride=_pair(conv.stride),
        padding=_pair(conv.padding),
        kernel=_pair(conv.kernel_size),
        groups=conv.groups,
        in_shape=tuple(in_shape),
        out_shape=tuple(out_shape),
        macs=0,
    )
    aff.macs = aff.conv_macs
    return aff


def bn_affine(bn: nn.BatchNorm2d, shape, weights: bool) -> Affine | None:
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        return None
    channels = bn.num_features
    weight = bias = None
    if weights:
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach().double()
        weight, bias = scale.view(channels, 1, 1, 1), shift
    return Affine(weight, bias, None, True, False, (1, 1), (0, 0), (1, 1), channels,
                  tuple(shape), tuple(shape), 0)


def identity_affine(shape, weights: bool) -> Affine:
    channels = shape[0]
    weight = torch.ones(channels, 1, 1, 1, dtype=torch.float64) if weights else None
    return Affine(weight, None, None, False, False, (1, 1), (0, 0), (1, 1), channels,
                  tuple(shape), tuple(shape), 0)


def _dense(a: Affine) -> torch.Tensor:
    if a.groups == 1:
        return a.weight
    co, cig, kh, kw = a.weight.shape
    g, cog = a.groups, co // a.groups
    dense = torch.zeros(co, cig * g, kh, kw, dtype=a.weight.dtype)
    for j in range(g):
        dense[j * cog:(j + 1) * cog, j * cig:(j + 1) * cig] = a.weight[j * cog:(j + 1) * cog]
    return dense


def _grouped(dense: torch.Tensor, groups: int) -> torch.Tensor:
    co, ci = dense.shape[:2]
    cog, cig = co // groups, ci // groups
    return torch.cat([dense[j * cog:(j + 1) * cog, j * cig:(j + 1) * cig] for j in range(groups)])


def _offset_map(a: Affine) -> torch.Tensor | None:
    """Everything ``a`` adds that does not depend on its input, as (C,H,W); None if nothing."""
    if a.bias_map is not None:
        return a.bias_map
    if a.bias is not None:
        return a.bias.view(-1, 1, 1).expand(a.out_shape).clone()
    return None


def _ghost_free(n: int, k1: int, s1: int, p1: int, k2: int, s2: int, p2: int) -> bool:
    """True when every zero-padded position the second conv reads would also be zero if the
    first conv were evaluated there (its window lies wholly in the padding)."""
    if p2 == 0:
        return True
    m = (n + 2 * p1 - k1) // s1 + 1
    out = (m + 2 * p2 - k2) // s2 + 1
    last = (out - 1) * s2 - p2 + k2 - 1
    for j in [*range(-p2, 0), *range(m, last + 1)]:
        start = j * s1 - p1
        if not (start + k1 - 1 < 0 or start >= n):
            return False
    return True


def compose(a: Affine, b: Affine, weights: bool = True) -> Affine | None:
    """``b`` after ``a`` as one conv, or None where that is not exact."""
    if a.out_shape != b.in_shape:
        return None
    for d in range(2):
        n = a.in_shape[1 + d]
        if not _ghost_free(n, a.kernel[d], a.stride[d], a.padding[d], b.kernel[d], b.stride[d], b.padding[d]):
            return None
    kernel = tuple(a.kernel[d] + (b.kernel[d] - 1) * a.stride[d] for d in range(2))
    stride = tuple(a.stride[d] * b.stride[d] for d in range(2))
    padding = tuple(a.padding[d] + b.padding[d] * a.stride[d] for d in range(2))
    for d in range(2):
        if (a.in_shape[1 + d] + 2 * padding[d] - kernel[d]) // stride[d] + 1 != b.out_shape[1 + d]:
            return None
    groups = a.groups if a.groups == b.groups and a.in_shape[0] % a.groups == 0 else 1
    if groups > 1 and (b.in_shape[0] // groups) * groups != b.in_shape[0]:
        groups = 1
    a_offset = a.has_bias or a.has_bias_map
    # an input-independent offset of ``a`` varies across positions once ``b`` zero-pads it
    has_map = a.has_bias_map or b.has_bias_map or (a_offset and any(b.padding))
    has_bias = (a_offset or b.has_bias) and not has_map
    out = Affine(None, None, None, has_bias, has_map, stride, padding, kernel, groups,
                 a.in_shape, b.out_shape, 0)
    out.macs = out.conv_macs
    if not weights:
        return out
    dense_a, dense_b = _dense(a), _dense(b)
    # composite kernel = a's kernel convolved with b's kernel dilated by a's stride
    full = F.conv_transpose2d(dense_a.permute(1, 0, 2, 3), dense_b.permute(1, 0, 2, 3), dilation=a.stride)
    full = full.permute(1, 0, 2, 3).contiguous()
    out.weight = _grouped(full, groups) if groups > 1 else full
    offset = _offset_map(a)
    through = None
    if offset is not None:
        through = F.conv2d(offset[None], b.weight, None, b.stride, b.padding, 1, b.groups)[0]
    b_offset = _offset_map(b)
    total = through if b_offset is None else (b_offset if through is None else through + b_offset)
    if has_map:
        out.bias_map = total
    elif has_bias:
        out.bias = total[:, 0, 0].clone()
    return out


def combine(a: Affine, b: Affine, weights: bool = True) -> Affine | None:
    """``a(x) + b(x)`` for two convs of the same input, as one conv; None where not exact."""
    if a.in_shape != b.in_shape or a.out_shape != b.out_shape or a.stride != b.stride:
        return None
    padding = tuple(max(a.padding[d], b.padding[d]) for d in range(2))
    kernel = tuple(
        padding[d] + max(a.kernel[d] - a.padding[d], b.kernel[d] - b.padding[d]) for d in range(2)
    )
    for d in range(2):
        if (a.in_shape[1 + d] + 2 * padding[d] - kernel[d]) // a.stride[d] + 1 != a.out_shape[1 + d]:
            return None
    groups = a.groups if a.groups == b.groups else 1
    has_map = a.has_bias_map or b.has_bias_map
    has_bias = (a.has_bias or b.has_bias) and not has_map
    out = Affine(None, None, None, has_bias, has_map, a.stride, padding, kernel, groups,
                 a.in_shape, a.out_shape, 0)
    out.macs = out.conv_macs
    if not weights:
        return out
    co, ci = a.out_shape[0], a.in_shape[0]
    full = torch.zeros(co, ci, *kernel, dtype=torch.float64)
    for part in (a, b):
        oh, ow = padding[0] - part.padding[0], padding[1] - part.padding[1]
        full[:, :, oh:oh + part.kernel[0], ow:ow + part.kernel[1]] += _dense(part)
    out.weight = _grouped(full, groups) if groups > 1 else full
    offsets = [o for o in (_offset_map(a), _offset_map(b)) if o is not None]
    if offsets:
        total = offsets[0] if len(offsets) == 1 else offsets[0] + offsets[1]
        if has_map:
            out.bias_map = total
        else:
            out.bias = total[:, 0, 0].clone()
    return out


# -- graph units ----------------------------------------------------------------------------
@dataclass
class Unit:
    """An affine piece of the graph: one conv or BN node, or a merged conv plus its bias map."""

    first: fx.Node
    output: fx.Node
    nodes: list[fx.Node]
    source: fx.Node

    def affine(self, gm: fx.GraphModule, weights: bool) -> Affine | None:
        module = gm.get_submodule(str(self.first.target))
        in_shape = _shape(self.source)
        if isinstance(module, nn.BatchNorm2d):
            return bn_affine(module, in_shape, weights)
        aff = conv_affine(module, in_shape, _shape(self.first), weights)
        if aff is None or self.output is self.first:
            return aff
        bias_node = next(a for a in self.output.args if a is not self.first)
        aff.has_bias_map, aff.has_bias = True, False
        if weights:
            bias_map = _get_attr(gm, str(bias_node.target)).detach().double()
            if aff.bias is not None:
                bias_map = bias_map + aff.bias.view(-1, 1, 1)
            aff.bias, aff.bias_map = None, bias_map
        return aff


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()


def _get_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _is_bias_add(node: fx.Node, conv: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in ADD_TARGETS or node.kwargs or len(node.args) != 2:
        return False
    other = node.args[1] if node.args[0] is conv else node.args[0]
    return isinstance(other, fx.Node) and other.op == "get_attr" and str(other.target).endswith(BIAS_SUFFIX)


def unit_at(gm: fx.GraphModule, node: fx.Node) -> Unit | None:
    """The unit that starts at ``node`` (a conv or BN call), if it is one."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    module = gm.get_submodule(str(node.target))
    if not (isinstance(module, nn.Conv2d) or (isinstance(module, nn.BatchNorm2d) and module.running_var is not None)):
        return None
    if len(_shape(node)) != 3 or len(_shape(node.args[0])) != 3:
        return None
    users = list(node.users)
    if isinstance(module, nn.Conv2d) and len(users) == 1 and _is_bias_add(users[0], node):
        bias_node = next(a for a in users[0].args if a is not node)
        return Unit(node, users[0], [node, users[0], bias_node], node.args[0])
    return Unit(node, node, [node], node.args[0])


def _units(gm: fx.GraphModule) -> list[Unit]:
    units = []
    for node in gm.graph.nodes:
        unit = unit_at(gm, node)
        if unit is not None and unit.affine(gm, weights=False) is not None:
            units.append(unit)
    return units


def propagate_shapes(gm: fx.GraphModule, input_size: tuple[int, ...]) -> None:
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *input_size), dtype=dtype))


# -- rewrites -------------------------------------------------------------------------------
def _module_parent(target: str) -> str:
    """Where a merged conv lives: under its stage (so MACs stay attributed), else at the top."""
    head = target.split(".")[0]
    return head if "." in target else ""


def _materialize(gm: fx.GraphModule, aff: Affine, source: fx.Node, before: fx.Node, into: str,
                 parent: str) -> fx.Node:
    co, ci = aff.out_shape[0], aff.in_shape[0]
    param = next(gm.parameters())
    conv = nn.Conv2d(ci, co, aff.kernel, aff.stride, aff.padding, groups=aff.groups, bias=aff.has_bias)
    conv = conv.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        conv.weight.copy_(aff.weight)
        if aff.has_bias:
            conv.bias.copy_(aff.bias)
    target = f"{parent}.{into}" if parent else into
    gm.add_submodule(target, conv)
    meta = dict(before.meta)  # same output shape: later analysis needs no new shape pass
    with gm.graph.inserting_before(before):
        node = gm.graph.call_module(target, (source,))
        node.meta = dict(meta)
        if aff.has_bias_map:
            owner = gm.get_submodule(parent) if parent else gm
            owner.register_buffer(into + BIAS_SUFFIX, aff.bias_map.to(device=param.device, dtype=param.dtype))
            attr = gm.graph.get_attr(f"{parent}.{into}{BIAS_SUFFIX}" if parent else into + BIAS_SUFFIX)
            node = gm.graph.call_function(operator.add, (node, attr))
            node.meta = dict(meta)
    return node


def _erase(gm: fx.GraphModule, nodes: list[fx.Node]) -> None:
    for node in sorted(set(nodes), key=_order(gm), reverse=True):
        gm.graph.erase_node(node)


def _order(gm: fx.GraphModule) -> Callable[[fx.Node], int]:
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    return lambda n: index[n]


def finish_rewrite(gm: fx.GraphModule) -> None:
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()


def _node(gm: fx.GraphModule, name: str) -> fx.Node:
    for node in gm.graph.nodes:
        if node.name == name:
            return node
    raise KeyError(f"the graph has no node '{name}'")


def fold_bn_pairs(gm: fx.GraphModule) -> list[list[str]]:
    """The (conv node, BN node) pairs that fold exactly: the BN is the conv's only user."""
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(str(node.target)), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1 or len(node.args) != 1:
            continue
        conv, bn = gm.get_submodule(str(src.target)), gm.get_submodule(str(node.target))
        if isinstance(conv, nn.Conv2d) and bn.running_var is not None and bn.num_features == conv.out_channels:
            pairs.append([src.name, node.name])
    return pairs


def fold_bn(gm: fx.GraphModule, pairs: list[list[str]]) -> None:
    """Folds each BN into its conv (eval-mode statistics); the conv keeps its module path."""
    for conv_name, bn_name in pairs:
        conv_node, bn_node = _node(gm, conv_name), _node(gm, bn_name)
        conv, bn = gm.get_submodule(str(conv_node.target)), gm.get_submodule(str(bn_node.target))
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        gm.add_submodule(str(conv_node.target), fused)
        bn_node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(bn_node)
    finish_rewrite(gm)


def merge_chain(gm: fx.GraphModule, names: list[str], into: str) -> None:
    """Replaces the chain of units starting at nodes ``names`` by one conv called ``into``."""
    units = [unit_at(gm, _node(gm, name)) for name in names]
    aff = units[0].affine(gm, weights=True)
    for unit in units[1:]:
        aff = compose(aff, unit.affine(gm, weights=True))
        if aff is None:
            raise ValueError(f"chain {names} does not compose exactly")
    last = units[-1]
    new = _materialize(gm, aff, units[0].source, last.output, into, _module_parent(str(last.first.target)))
    last.output.replace_all_uses_with(new)
    _erase(gm, [n for u in units for n in u.nodes])
    finish_rewrite(gm)


def _residual_parts(gm: fx.GraphModule, add: fx.Node) -> tuple[Unit, Unit | None, fx.Node] | None:
    """For ``add(a(x), b(x))`` or ``add(a(x), x)``: the units and x, if mergeable."""
    if add.op != "call_function" or add.target not in ADD_TARGETS or add.kwargs or len(add.args) != 2:
        return None
    left, right = add.args
    if not isinstance(left, fx.Node) or not isinstance(right, fx.Node) or left is right:
        return None

    def unit_ending(node: fx.Node) -> Unit | None:
        first = node.args[0] if node.op == "call_function" and node.target in ADD_TARGETS else node
        if not isinstance(first, fx.Node):
            return None
        unit = unit_at(gm, first)
        if unit is None or unit.output is not node or len(node.users) != 1:
            return None
        return unit if unit.affine(gm, weights=False) is not None else None

    for a_node, b_node in ((left, right), (right, left)):
        a = unit_ending(a_node)
        if a is None:
            continue
        if a.source is b_node:
            return a, None, b_node
        b = unit_ending(b_node)
        if b is not None and b.source is a.source:
            return a, b, a.source
    return None


def _residual_affine(gm: fx.GraphModule, parts, weights: bool) -> Affine | None:
    a, b, source = parts
    aff_a = a.affine(gm, weights)
    aff_b = b.affine(gm, weights) if b is not None else identity_affine(_shape(source), weights)
    if aff_a is None or aff_b is None:
        return None
    return combine(aff_a, aff_b, weights)


def merge_residual(gm: fx.GraphModule, add_name: str, into: str) -> None:
    """Replaces ``a(x) + b(x)`` (or ``a(x) + x``) at node ``add_name`` by one conv ``into``."""
    add = _node(gm, add_name)
    parts = _residual_parts(gm, add)
    if parts is None:
        raise ValueError(f"node {add_name} is not a mergeable residual")
    aff = _residual_affine(gm, parts, weights=True)
    if aff is None:
        raise ValueError(f"residual {add_name} does not combine exactly")
    a, b, source = parts
    new = _materialize(gm, aff, source, add, into, _module_parent(str(a.first.target)))
    add.replace_all_uses_with(new)
    _erase(gm, [add, *a.nodes, *(b.nodes if b is not None else [])])
    finish_rewrite(gm)


# -- deciding what to merge ------------------------------------------------------------------
def _chains(gm: fx.GraphModule) -> list[list[Unit]]:
    units = _units(gm)
    by_first = {u.first: u for u in units}
    succ: dict[int, Unit] = {}
    has_pred = set()
    for u in units:
        users = list(u.output.users)
        if len(users) == 1 and users[0] in by_first and by_first[users[0]].source is u.output:
            succ[id(u)] = by_first[users[0]]
            has_pred.add(id(by_first[users[0]]))
    chains = []
    for u in units:
        if id(u) in has_pred:
            continue
        chain = [u]
        while id(chain[-1]) in succ:
            chain.append(succ[id(chain[-1])])
        if len(chain) > 1:
            chains.append(chain)
    return chains


def _best_split(gm: fx.GraphModule, chain: list[Unit], force: bool, bias_maps: bool) -> list[tuple[int, int]]:
    """Splits a chain into segments, each one conv, minimizing (MACs, layers), or with ``force``
    (layers, MACs). Returns the segments longer than one unit."""
    n = len(chain)
    single = [u.affine(gm, weights=False) for u in chain]
    seg: dict[tuple[int, int], int] = {}
    for i in range(n):
        aff = single[i]
        for j in range(i + 1, n):
            aff = compose(aff, single[j], weights=False) if aff is not None else None
            if aff is None or (aff.has_bias_map and not bias_maps):
                break
            seg[(i, j)] = aff.macs
    inf = (float("inf"), float("inf"))
    best: list[tuple[tuple[float, float], list[tuple[int, int]]]] = [((0, 0), [])] + [(inf, [])] * n
    for j in range(1, n + 1):
        for i in range(j):
            macs = single[i].macs if i == j - 1 else seg.get((i, j - 1))
            if macs is None or best[i][0] == inf:
                continue
            prev = best[i][0]
            cost = (prev[0] + macs, prev[1] + 1) if not force else (prev[0] + 1, prev[1] + macs)
            if cost < best[j][0]:
                best[j] = (cost, best[i][1] + ([(i, j - 1)] if j - 1 > i else []))
    return best[n][1]


def plan_and_merge(gm: fx.GraphModule, input_size: tuple[int, ...], force: bool = False,
                   bias_maps: bool = False, start: int = 0) -> list[dict[str, Any]]:
    """Merges, until nothing changes, every chain segment and residual sum that composes exactly
    and does not raise MACs (``force``: whatever composes exactly). Merges whose offset varies
    per position need a bias-map constant (a ``get_attr`` + add in the graph); only with
    ``bias_maps``. Returns the transforms made, each replayable with :func:`apply_transform`."""
    done: list[dict[str, Any]] = []
    propagate_shapes(gm, input_size)  # rewrites keep shapes on the nodes they make
    for _ in range(10_000):
        step = None
        for chain in _chains(gm):
            segments = _best_split(gm, chain, force, bias_maps)
            if segments:
                i, j = segments[0]
                step = {"op": "merge_chain", "nodes": [u.first.name for u in chain[i:j + 1]]}
                break
        if step is None:
            for node in gm.graph.nodes:
                parts = _residual_parts(gm, node)
                if parts is None:
                    continue
                aff = _residual_affine(gm, parts, weights=False)
                before = parts[0].affine(gm, False).macs + (parts[1].affine(gm, False).macs if parts[1] else 0)
                if aff is not None and (force or aff.macs <= before) and (bias_maps or not aff.has_bias_map):
                    step = {"op": "merge_residual", "node": node.name}
                    break
        if step is None:
            return done
        step["into"] = f"merged{start + len(done)}"
        apply_transform(gm, step)
        done.append(step)
    raise RuntimeError("merging did not converge")


def apply_transform(gm: fx.GraphModule, step: dict[str, Any]) -> None:
    """Replays one recorded merge on a graph with the same structure, whose nodes carry shapes
    (``propagate_shapes`` once; each rewrite keeps them)."""
    if step["op"] == "fold_bn":
        fold_bn(gm, step["pairs"])
    elif step["op"] == "merge_chain":
        merge_chain(gm, list(step["nodes"]), step["into"])
    elif step["op"] == "merge_residual":
        merge_residual(gm, step["node"], step["into"])
    else:
        raise ValueError(f"unknown merge transform {step['op']!r}")


__all__ = [
    "Affine", "apply_transform", "combine", "compose", "fold_bn", "fold_bn_pairs", "merge_chain", "merge_residual",
    "plan_and_merge",
]

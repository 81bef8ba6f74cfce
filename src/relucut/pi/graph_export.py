"""Describe an eval-mode network as a small op graph (JSON) plus its arrays (.npz).

The SPU environment has no torch, so the network crosses over as data: ``spu_runner.py`` rebuilds
a JAX function from this description. BatchNorm is folded into the convolution before it (a
public per-channel multiply would still cost a truncation under fixed point), masked ReLU sites
become gathers of their active positions (public indices: local in 2PC), and dropped sites vanish;
positions that compute a polynomial instead (``poly2``: c0 + x * (c1 + c2 * x) per channel) keep
it, gathered beside the ReLUs where the site is masked.
Beyond ReLUs it carries the per-element kinds relucut counts (GELU, SiLU, sigmoid, tanh, Hardswish,
Hardsigmoid, softmax, LayerNorm, products and matrix products of two activations) and the reshaping
attention needs (transpose, permute, scaling by a constant).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from relucut.errors import RelucutError
from relucut.site_module import PartialReLU, ReLUSite
from relucut.sites import RELU_FUNCTIONS, RELU_METHODS, trace

GRAPH_VERSION = 1
POLY_ROWS = ("c0", "c1", "c2")  # coefficient arrays of a polynomial op, as relucut.plan writes them

# activation modules and functions -> (graph op, attributes read from the call)
_ELEMENTWISE_MODULES = ((nn.SiLU, "silu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.Hardswish, "hardswish"),
                        (nn.Hardsigmoid, "hardsigmoid"))
_ELEMENTWISE_FUNCTIONS = {F.silu: "silu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
                          F.tanh: "tanh", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid"}
_ELEMENTWISE_METHODS = {"sigmoid": "sigmoid", "tanh": "tanh"}
_MUL = {operator.mul, torch.mul}
_MATMUL = {operator.matmul, torch.matmul, torch.bmm}

_ADD = {operator.add, torch.add, operator.iadd}
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)


@dataclass
class OpGraph:
    """Ops in topological order; each op has ``name``, ``op``, ``inputs`` and attributes."""

    input_shape: tuple[int, ...]
    ops: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    output: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": GRAPH_VERSION, "input_shape": list(self.input_shape), "ops": self.ops,
                "output": self.output}

    @property
    def relus(self) -> int:
        """ReLUs the graph evaluates per input (what the secure engine pays)."""
        total = 0
        for op in self.ops:
            if op["op"] == "relu":
                total += math.prod(op["shape"])
            elif op["op"] == "partial_relu":
                total += int(self.arrays[op["index"]].size)
        return total

    def add_array(self, key: str, value: torch.Tensor | np.ndarray) -> str:
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        self.arrays[key] = arr.astype(np.int64 if arr.dtype.kind in "iub" else np.float32)
        return key


def _unsupported(what: str) -> RelucutError:
    return RelucutError(
        f"the PI converter does not support {what}; rewrite that part of the model with supported ops "
        "(Conv2d, Linear, BatchNorm2d, add, ReLU/ReLU sites, avg/adaptive-avg/max pooling, mean, flatten, "
        "GELU, SiLU, sigmoid, tanh, Hardswish, Hardsigmoid, softmax, LayerNorm, products, matmul, transpose)"
    )


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d):
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0.0) - bn.running_mean * scale
    w = weight.detach() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b = shift + (bias.detach() * scale if bias is not None else 0.0)
    return w, b


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _shape(node: fx.Node) -> list[int]:
    meta = node.meta.get("tensor_meta")
    return list(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else []


class _Converter:
    def __init__(self, model: nn.Module, input_size: tuple[int, ...]):
        self.gm = trace(model)
        self.modules = dict(self.gm.named_modules())
        ShapeProp(self.gm).propagate(torch.zeros((1, *input_size)))
        self.graph = OpGraph(tuple(input_size))
        self.alias: dict[str, str] = {}  # fx node -> op name producing its value
        self.sizes: set[str] = set()  # nodes holding x.size(...) results

    def ref(self, arg) -> str:
        if not isinstance(arg, fx.Node):
            raise _unsupported(f"a constant operand ({arg!r}) in a tensor op")
        if arg.name in self.sizes:
            raise _unsupported(f"shape arithmetic on '{arg.name}'")
        return self.alias[arg.name]

    def emit(self, node: fx.Node, op: str, inputs: list[str], **attrs) -> None:
        self.graph.ops.append({"name": node.name, "op": op, "inputs": inputs, "shape": _shape(node), **attrs})
        self.alias[node.name] = node.name

    def run(self) -> OpGraph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.graph.ops:
                    raise _unsupported("a model with more than one input")
                self.emit(node, "input", [])
            elif node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node):
                    raise _unsupported("a model with several outputs")
                self.graph.output = self.ref(out)
            elif node.op == "call_module":
                self.module(node, self.modules[node.target])
            elif node.op == "call_function":
                self.function(node)
            elif node.op == "call_method":
                self.method(node)
            elif node.op == "get_attr":
                raise _unsupported(f"a tensor attribute used in forward ('{node.target}')")
        return self.graph

    # --- modules -------------------------------------------------------------------------------
    def module(self, node: fx.Node, mod: nn.Module) -> None:
        x = node.args[0]
        if isinstance(mod, nn.Conv2d):
            if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                raise _unsupported(f"Conv2d with padding={mod.padding!r}/{mod.padding_mode} at '{node.name}'")
            self.emit(node, "conv2d", [self.ref(x)],
                      weight=self.graph.add_array(f"{node.name}.weight", mod.weight),
                      bias=self.graph.add_array(f"{node.name}.bias", mod.bias) if mod.bias is not None else None,
                      stride=_pair(mod.stride), padding=_pair(mod.padding), dilation=_pair(mod.dilation),
                      groups=int(mod.groups))
        elif isinstance(mod, nn.Linear):
            self.emit(node, "linear", [self.ref(x)],
                      weight=self.graph.add_array(f"{node.name}.weight", mod.weight),
                      bias=self.graph.add_array(f"{node.name}.bias", mod.bias) if mod.bias is not None else None)
        elif isinstance(mod, nn.BatchNorm2d):
            self.batchnorm(node, mod)
        elif isinstance(mod, PartialReLU):
            self.partial_relu(node, x, mod)
        elif isinstance(mod, ReLUSite):
            self.relu_site(node, mod)
        elif isinstance(mod, nn.ReLU):
            self.emit(node, "relu", [self.ref(x)])
        elif isinstance(mod, _IDENTITY_MODULES):
            self.alias[node.name] = self.ref(x)
        elif isinstance(mod, (nn.AvgPool2d, nn.MaxPool2d)):
            if getattr(mod, "dilation", 1) not in (1, (1, 1)):
                raise _unsupported(f"dilated max-pooling at '{node.name}'")
            self.pool(node, "max_pool2d" if isinstance(mod, nn.MaxPool2d) else "avg_pool2d",
                      mod.kernel_size, mod.stride or mod.kernel_size, mod.padding, mod.ceil_mode,
                      getattr(mod, "count_include_pad", True))
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            self.adaptive_avg(node, mod.output_size)
        elif isinstance(mod, nn.Flatten):
            self.emit(node, "flatten", [self.ref(x)], start_dim=int(mod.start_dim))
        elif isinstance(mod, nn.GELU):
            self.emit(node, "gelu", [self.ref(x)], approximate=mod.approximate == "tanh")
        elif isinstance(mod, nn.Softmax):
            self.emit(node, "softmax", [self.ref(x)], dim=int(mod.dim))
        elif isinstance(mod, nn.LayerNorm):
            self.layernorm(node, x, tuple(mod.normalized_shape), mod.weight, mod.bias, mod.eps)
        elif any(isinstance(mod, t) for t, _ in _ELEMENTWISE_MODULES):
            self.emit(node, next(op for t, op in _ELEMENTWISE_MODULES if isinstance(mod, t)), [self.ref(x)])
        else:
            raise _unsupported(f"module {type(mod).__name__} at '{node.name}'")

    def layernorm(self, node: fx.Node, x, normalized_shape, weight, bias, eps) -> None:
        self.emit(node, "layer_norm", [self.ref(x)], dims=len(normalized_shape), eps=float(eps),
                  weight=self.graph.add_array(f"{node.name}.weight", weight) if weight is not None else None,
                  bias=self.graph.add_array(f"{node.name}.bias", bias) if bias is not None else None)

    def batchnorm(self, node: fx.Node, bn: nn.BatchNorm2d) -> None:
        if bn.training or bn.running_mean is None:
            raise RelucutError(f"BatchNorm '{node.name}' is in training mode or has no running statistics; "
                               "call model.eval() (or export the model) before measuring")
        src = node.args[0]
        producer = next((op for op in self.graph.ops if op["name"] == self.alias.get(src.name)), None)
        if producer is not None and producer["op"] == "conv2d" and len(src.users) == 1:
            w = torch.from_numpy(self.graph.arrays[producer["weight"]])
            b = torch.from_numpy(self.graph.arrays[producer["bias"]]) if producer["bias"] else None
            w, b = _fold_bn(w, b, bn)
            self.graph.arrays[producer["weight"]] = w.numpy().astype(np.float32)
            producer["bias"] = self.graph.add_array(f"{producer['name']}.bias", b)
            producer["shape"] = _shape(node)
            self.alias[node.name] = producer["name"]
            return
        scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.detach()
        shift = (bn.bias.detach() if bn.affine else 0.0) - bn.running_mean * scale
        self.emit(node, "channel_affine", [self.ref(src)],
                  scale=self.graph.add_array(f"{node.name}.scale", scale),
                  shift=self.graph.add_array(f"{node.name}.shift", shift))

    def relu_site(self, node: fx.Node, site: ReLUSite) -> None:
        x = self.ref(node.args[0])
        if any(getattr(type(site), f) is not getattr(ReLUSite, f) for f in ("forward", "activation", "coefficients")):
            raise _unsupported(f"site module {type(site).__name__} at '{node.name}' (export the model first)")
        if site.mode == "relu":
            self.emit(node, "relu", [x])
        elif site.mode == "identity" and site.poly is None:
            self.alias[node.name] = x
        elif site.mode == "identity":
            self.emit(node, "poly2", [x], **{row: self.graph.add_array(f"{node.name}.{row}", site.poly[i])
                                            for i, row in enumerate(POLY_ROWS)})
        else:
            self.partial_relu(node, node.args[0], PartialReLU.from_mask(site.mask, tuple(_shape(node)), site.poly))

    def partial_relu(self, node: fx.Node, x, mod: PartialReLU) -> None:
        """ReLUs at the gathered ``index``; the other positions pass through, or (with a polynomial)
        are gathered too and compute it with per-position coefficients (public, like weights)."""
        attrs = {"index": self.graph.add_array(f"{node.name}.index", mod.index)}
        if mod.poly is not None:
            attrs["rest"] = self.graph.add_array(f"{node.name}.rest", mod.rest)
            coef = mod.poly[:, mod.rest_channel]
            attrs.update({row: self.graph.add_array(f"{node.name}.{row}", coef[i]) for i, row in enumerate(POLY_ROWS)})
        self.emit(node, "partial_relu", [self.ref(x)], **attrs)

    def pool(self, node, op, kernel, stride, padding, ceil_mode, count_include_pad) -> None:
        self.emit(node, op, [self.ref(node.args[0])], kernel=_pair(kernel), stride=_pair(stride),
                  padding=_pair(padding), ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))

    def adaptive_avg(self, node: fx.Node, output_size) -> None:
        x = node.args[0]
        h, w = _shape(x)[-2:]
        oh, ow = _pair(output_size if output_size is not None else (h, w))
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            raise _unsupported(f"adaptive average pooling {h}x{w} -> {oh}x{ow} (not an even split) at '{node.name}'")
        self.emit(node, "avg_pool2d", [self.ref(x)], kernel=[h // oh, w // ow], stride=[h // oh, w // ow],
                  padding=[0, 0], ceil_mode=False, count_include_pad=True)

    # --- functions and methods -----------------------------------------------------------------
    def function(self, node: fx.Node) -> None:
        fn, args, kw = node.target, node.args, node.kwargs
        name = getattr(fn, "__name__", str(fn))
        if fn in _ADD:
            self.add(node, args[0], args[1])
        elif fn in RELU_FUNCTIONS:
            self.emit(node, "relu", [self.ref(args[0])])
        elif fn is torch.flatten:
            self.emit(node, "flatten", [self.ref(args[0])], start_dim=int(args[1] if len(args) > 1 else kw.get("start_dim", 0)))
        elif fn is F.adaptive_avg_pool2d:
            self.adaptive_avg(node, args[1] if len(args) > 1 else kw["output_size"])
        elif fn in (F.avg_pool2d, F.max_pool2d):
            kernel = args[1] if len(args) > 1 else kw["kernel_size"]
            stride = (args[2] if len(args) > 2 else kw.get("stride")) or kernel
            padding = args[3] if len(args) > 3 else kw.get("padding", 0)
            ceil_mode = kw.get("ceil_mode", args[4] if fn is F.avg_pool2d and len(args) > 4 else False)
            self.pool(node, "avg_pool2d" if fn is F.avg_pool2d else "max_pool2d", kernel, stride, padding,
                      ceil_mode, kw.get("count_include_pad", True))
        elif fn is torch.mean:
            self.mean(node, args[0], args[1] if len(args) > 1 else kw.get("dim"), kw.get("keepdim", False))
        elif fn in _ELEMENTWISE_FUNCTIONS:
            self.emit(node, _ELEMENTWISE_FUNCTIONS[fn], [self.ref(args[0])])
        elif fn is F.gelu:
            self.emit(node, "gelu", [self.ref(args[0])], approximate=kw.get("approximate", "none") == "tanh")
        elif fn in (F.softmax, torch.softmax):
            self.emit(node, "softmax", [self.ref(args[0])], dim=int(args[1] if len(args) > 1 else kw["dim"]))
        elif fn is F.layer_norm:
            shape = args[1] if len(args) > 1 else kw["normalized_shape"]
            weight, bias = (self._param(args, kw, i, name) for i, name in ((2, "weight"), (3, "bias")))
            self.layernorm(node, args[0], tuple(shape), weight, bias, kw.get("eps", args[4] if len(args) > 4 else 1e-5))
        elif fn in _MUL:
            self.product(node, args[0], args[1])
        elif fn is operator.truediv and isinstance(args[1], (int, float)):
            self.emit(node, "scale", [self.ref(args[0])], factor=1.0 / float(args[1]))
        elif fn in _MATMUL:
            self.emit(node, "matmul", [self.ref(args[0]), self.ref(args[1])])
        elif fn is torch.transpose:
            self.emit(node, "transpose", [self.ref(args[0])], dims=[int(args[1]), int(args[2])])
        elif (fn is getattr and args[1] == "shape") or (
                fn is operator.getitem and isinstance(args[0], fx.Node) and args[0].name in self.sizes):
            self.sizes.add(node.name)
        else:
            raise _unsupported(f"function {name} at '{node.name}'")

    def method(self, node: fx.Node) -> None:
        name, args, kw = node.target, node.args, node.kwargs
        if name in RELU_METHODS:
            self.emit(node, "relu", [self.ref(args[0])])
        elif name in ("add", "add_"):
            self.add(node, args[0], args[1])
        elif name == "size":
            self.sizes.add(node.name)
        elif name == "flatten":
            self.emit(node, "flatten", [self.ref(args[0])], start_dim=int(args[1] if len(args) > 1 else kw.get("start_dim", 0)))
        elif name in ("view", "reshape") and len(args) == 3 and isinstance(args[1], fx.Node) \
                and args[1].name in self.sizes and args[2] == -1:
            self.emit(node, "flatten", [self.ref(args[0])], start_dim=1)  # x.view(x.size(0), -1)
        elif name == "mean":
            self.mean(node, args[0], args[1] if len(args) > 1 else kw.get("dim"), kw.get("keepdim", False))
        elif name == "contiguous":
            self.alias[node.name] = self.ref(args[0])
        elif name in _ELEMENTWISE_METHODS:
            self.emit(node, _ELEMENTWISE_METHODS[name], [self.ref(args[0])])
        elif name == "softmax":
            self.emit(node, "softmax", [self.ref(args[0])], dim=int(args[1] if len(args) > 1 else kw["dim"]))
        elif name in ("mul", "mul_"):
            self.product(node, args[0], args[1])
        elif name == "matmul":
            self.emit(node, "matmul", [self.ref(args[0]), self.ref(args[1])])
        elif name == "transpose":
            self.emit(node, "transpose", [self.ref(args[0])], dims=[int(args[1]), int(args[2])])
        elif name == "permute":
            dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
            self.emit(node, "permute", [self.ref(args[0])], dims=[int(d) for d in dims])
        else:
            raise _unsupported(f"tensor method .{name}() at '{node.name}'")

    def product(self, node: fx.Node, a, b) -> None:
        """Two activations: an elementwise product (2PC); an activation and a number: a public scale."""
        if isinstance(a, (int, float)):
            a, b = b, a
        if isinstance(b, (int, float)):
            self.emit(node, "scale", [self.ref(a)], factor=float(b))
        else:
            self.emit(node, "mul", [self.ref(a), self.ref(b)])

    def _param(self, args, kw, index: int, name: str):
        value = args[index] if len(args) > index else kw.get(name)
        if isinstance(value, fx.Node):
            if value.op != "get_attr":
                raise _unsupported(f"a computed layer-norm {name} at '{value.name}'")
            try:
                return self.gm.get_parameter(str(value.target))
            except AttributeError:
                return self.gm.get_buffer(str(value.target))
        return value

    def add(self, node: fx.Node, a, b) -> None:
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise _unsupported(f"adding a constant at '{node.name}'")
        self.emit(node, "add", [self.ref(a), self.ref(b)])

    def mean(self, node: fx.Node, x, dim, keepdim) -> None:
        if dim is None:
            raise _unsupported(f"a mean over all dimensions at '{node.name}'")
        dims = [int(d) for d in (dim if isinstance(dim, (tuple, list)) else [dim])]
        self.emit(node, "mean", [self.ref(x)], dims=dims, keepdim=bool(keepdim))


@torch.no_grad()
def export_graph(model: nn.Module, input_size: tuple[int, ...]) -> OpGraph:
    """Converts an eval-mode ``model`` (input C,H,W) into an :class:`OpGraph`."""
    was_training = model.training
    model.eval()
    try:
        return _Converter(model, tuple(int(v) for v in input_size)).run()
    finally:
        model.train(was_training)

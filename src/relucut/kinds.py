"""Non-linear work a 2PC engine pays for beyond activation modules: what depends on operands, and
what hides inside torch.nn modules that fx keeps whole.

``relucut.sites`` maps activation modules and functions (ReLU, GELU, LayerNorm, softmax, ...) to
kinds one call at a time. This module finds the rest of a traced, shape-propagated graph:

- products of two activations: elementwise (``mul``: squares, gates, multiplexers) and matrix
  products (``matmul``, counted in MACs: attention's Q·Kᵀ and A·V). A product with a weight or a
  constant is linear and is not counted here;
- ``div`` (division by an activation), ``exp``, ``log``, ``sqrt``, ``rsqrt``, ``reciprocal``, ``erf``
  and ``pow`` of an activation;
- ``max`` (max/min/argmax reductions and elementwise max/min), ``compare`` (x > y) and ``abs``,
  counted in comparisons like max-pooling;
- ``F.scaled_dot_product_attention``: its two matrix products (its softmax is counted by sites);
- torch.nn modules fx cannot trace into (``nn.MultiheadAttention``, ``nn.Transformer*`` layers):
  run once on the traced shapes, their aten ops give softmax, layer norm, activations and matmuls.

Shapes come from a propagation with a batch of one, so whole-tensor element counts are per input.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils._python_dispatch import TorchDispatchMode

# kinds counted in ReLU-equivalent comparisons (one per element, or per reduced element for max)
COMPARISON_KINDS = {"max": 1, "compare": 1, "abs": 1}

_UNARY_FUNCTIONS = {
    torch.exp: "exp", torch.exp_: "exp", torch.expm1: "exp", torch.log: "log", torch.log_: "log",
    torch.log1p: "log", torch.log2: "log", torch.sqrt: "sqrt", torch.sqrt_: "sqrt", torch.rsqrt: "rsqrt",
    torch.rsqrt_: "rsqrt", torch.reciprocal: "reciprocal", torch.reciprocal_: "reciprocal", torch.erf: "erf",
    torch.special.erf: "erf", torch.abs: "abs", torch.square: "mul",
}
_UNARY_METHODS = {"exp": "exp", "exp_": "exp", "expm1": "exp", "log": "log", "log_": "log", "log1p": "log",
                  "log2": "log", "sqrt": "sqrt", "sqrt_": "sqrt", "rsqrt": "rsqrt", "rsqrt_": "rsqrt",
                  "reciprocal": "reciprocal", "reciprocal_": "reciprocal", "erf": "erf", "abs": "abs", "square": "mul"}
_MAX_FUNCTIONS = {torch.max, torch.min, torch.amax, torch.amin, torch.argmax, torch.argmin, torch.maximum,
                  torch.minimum, torch.fmax, torch.fmin}
_MAX_METHODS = {"max", "min", "amax", "amin", "argmax", "argmin", "maximum", "minimum"}
_COMPARE_FUNCTIONS = {operator.gt, operator.lt, operator.ge, operator.le, torch.gt, torch.lt, torch.ge, torch.le,
                      torch.greater, torch.less, torch.greater_equal, torch.less_equal}
_COMPARE_METHODS = {"gt", "lt", "ge", "le", "greater", "less", "greater_equal", "less_equal"}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul, torch.multiply}
_MUL_METHODS = {"mul", "mul_", "multiply"}
_DIV_FUNCTIONS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, torch.divide}
_DIV_METHODS = {"div", "div_", "true_divide", "divide"}
_POW_FUNCTIONS = {operator.pow, operator.ipow, torch.pow}
_POW_METHODS = {"pow", "pow_"}
_MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm, torch.mm}
_MATMUL_METHODS = {"matmul", "bmm", "mm"}
_ADD_MATMUL_FUNCTIONS = {torch.baddbmm, torch.addmm, torch.addbmm}  # (input, a, b)
_POW_KIND = {2: "mul", 0.5: "sqrt", -0.5: "rsqrt", -1: "reciprocal"}

# torch.nn modules fx keeps as leaves although they compute attention, norms and activations inside
COMPOSITE_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                     nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer)
_ATEN_KINDS = {"_softmax": "softmax", "_safe_softmax": "softmax", "_log_softmax": "log_softmax",
               "native_layer_norm": "layernorm", "gelu": "gelu", "relu": "relu", "silu": "silu",
               "sigmoid": "sigmoid", "tanh": "tanh"}


@dataclass(frozen=True)
class Extra:
    """One non-linear operation found beside the activation calls."""

    kind: str
    shape: tuple[int, ...]  # output shape without the batch of one
    comparisons: int | None  # ReLU-equivalent comparisons; None: priced per element by the protocol
    elements: int  # elements (MACs for matmul, comparisons for max)


def _meta(node) -> object | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if not hasattr(meta, "shape") and isinstance(meta, (tuple, list)) and meta:  # (values, indices) of max(dim=)
        meta = meta[0]
    return meta if hasattr(meta, "shape") else None


def full_shape(node) -> tuple[int, ...] | None:
    meta = _meta(node)
    return tuple(int(v) for v in meta.shape) if meta is not None else None


def _numel(node) -> int:
    shape = full_shape(node)
    return math.prod(shape) if shape is not None else 0


def _sample_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[1:] if shape and shape[0] == 1 else shape


def activations(gm: fx.GraphModule) -> set[fx.Node]:
    """Tensor nodes that depend on the input: products and divisions among them are secret x secret."""
    dynamic: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in dynamic for a in node.all_input_nodes):
            dynamic.add(node)
    return {n for n in dynamic if n.op == "placeholder" or _meta(n) is not None}


def _operand(node: fx.Node, index: int, name: str):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def _matmul_macs(out: fx.Node, a: fx.Node) -> int:
    shape = full_shape(a)
    return _numel(out) * (shape[-1] if shape else 1)


def _einsum_macs(node: fx.Node, operands: list[fx.Node]) -> int:
    """MACs of a two-operand einsum: the product of every index's size."""
    equation = str(node.args[0]).replace(" ", "").split("->")[0]
    sizes: dict[str, int] = {}
    for letters, operand in zip(equation.split(","), operands):
        for letter, size in zip(letters, full_shape(operand) or ()):
            sizes[letter] = size
    return math.prod(sizes.values())


def _attention_macs(node: fx.Node) -> int:
    """Q·Kᵀ and A·V of F.scaled_dot_product_attention: L x S x (E + Ev) per head."""
    q, k, v = (full_shape(_operand(node, i, n)) for i, n in enumerate(("query", "key", "value")))
    if not (q and k and v):
        return 0
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _kind_of_call(node: fx.Node, live: set[fx.Node]) -> tuple[str, int] | None:
    """(kind, elements) of an operand-dependent call, or None when it is linear or not one."""
    fn, method = (node.target, None) if node.op == "call_function" else (None, node.target)
    if node.op not in ("call_function", "call_method"):
        return None
    args = node.args
    first = args[0] if args else None
    is_live = lambda a: isinstance(a, fx.Node) and a in live
    if fn in _UNARY_FUNCTIONS or method in _UNARY_METHODS:
        return ((_UNARY_FUNCTIONS.get(fn) or _UNARY_METHODS[method]), _numel(node)) if is_live(first) else None
    if fn in _MAX_FUNCTIONS or method in _MAX_METHODS:
        if not is_live(first):
            return None
        other = _operand(node, 1, "other")
        if isinstance(other, fx.Node) and _meta(other) is not None:  # elementwise max(a, b)
            return "max", _numel(node)
        return "max", max(_numel(first) - _numel(node), 0)
    if fn in _COMPARE_FUNCTIONS or method in _COMPARE_METHODS:
        return ("compare", _numel(node)) if any(is_live(a) for a in args[:2]) else None
    if fn in _MUL_FUNCTIONS or method in _MUL_METHODS:
        return ("mul", _numel(node)) if len(args) >= 2 and is_live(args[0]) and is_live(args[1]) else None
    if fn in _DIV_FUNCTIONS or method in _DIV_METHODS:
        return ("div", _numel(node)) if len(args) >= 2 and is_live(args[1]) else None
    if fn in _POW_FUNCTIONS or method in _POW_METHODS:
        if len(args) < 2 or not (is_live(args[0]) or is_live(args[1])):
            return None
        kind = "pow" if isinstance(args[1], fx.Node) else _POW_KIND.get(args[1], None if args[1] == 1 else "pow")
        return (kind, _numel(node)) if kind else None
    if fn is torch.where and is_live(first):  # a multiplexer on a secret condition: one product per element
        return "mul", _numel(node)
    if fn in _MATMUL_FUNCTIONS or method in _MATMUL_METHODS:
        return ("matmul", _matmul_macs(node, args[0])) if len(args) >= 2 and is_live(args[0]) and is_live(args[1]) \
            else None
    if fn in _ADD_MATMUL_FUNCTIONS:
        return ("matmul", _matmul_macs(node, args[1])) if len(args) >= 3 and is_live(args[1]) and is_live(args[2]) \
            else None
    if fn is torch.einsum:
        operands = list(args[1][0] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:])
        if len(operands) == 2 and all(is_live(o) for o in operands):
            return "matmul", _einsum_macs(node, operands)
    return None


def extra_nonlinearities(node: fx.Node, modules: dict[str, nn.Module], live: set[fx.Node]) -> list[Extra]:
    """The non-linear operations of ``node`` that its kind alone does not say."""
    if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
        macs = _attention_macs(node)
        return [Extra("matmul", (), None, macs)] if macs else []
    if node.op == "call_module" and isinstance(modules[node.target], COMPOSITE_MODULES):
        return composite_nonlinearities(node, modules[node.target])
    found = _kind_of_call(node, live)
    if found is None or found[1] == 0:
        return []
    kind, elements = found
    shape = _sample_shape(full_shape(node) or ())
    comparisons = elements * COMPARISON_KINDS[kind] if kind in COMPARISON_KINDS else None
    return [Extra(kind, shape, comparisons, elements)]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Attention through its math path, whose matrix products the FLOP counter and aten see:
    nn.MultiheadAttention's fused fast path and SDPA's fused kernels hide them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class _AtenRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[Extra] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        value = out[0] if isinstance(out, (tuple, list)) else out
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
        if name in _ATEN_KINDS:
            kind = _ATEN_KINDS[name]
            numel = math.prod(shape)
            self.found.append(Extra(kind, _sample_shape(shape), numel if kind == "relu" else None, numel))
        elif name in ("bmm", "baddbmm"):  # inside these modules only attention multiplies activations
            a = args[0] if name == "bmm" else args[1]
            self.found.append(Extra("matmul", _sample_shape(shape), None, math.prod(shape) * a.shape[-1]))
        return out


@torch.no_grad()
def composite_nonlinearities(node: fx.Node, module: nn.Module) -> list[Extra]:
    """Runs ``module`` once on zeros of the traced shapes and reads its non-linear aten ops."""
    def tensor(arg):
        meta = _meta(arg)
        if meta is None:
            return arg
        param = next(module.parameters(), None)
        return torch.zeros(tuple(meta.shape), dtype=meta.dtype, device=param.device if param is not None else "cpu")

    args = [tensor(a) for a in node.args]
    kwargs = {k: tensor(v) for k, v in node.kwargs.items()}
    recorder = _AtenRecorder()
    was_training = module.training
    module.eval()
    try:
        with math_attention(), recorder:
            module(*args, **kwargs)
    finally:
        module.train(was_training)
    return recorder.found

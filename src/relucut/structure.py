"""Structure ops: the architecture changes an export replays on the spec-built model before its plan.

A recipe's ``structure`` lists them in order (``relucut.recipe``): ``replace_block`` puts a block's
shallow form in its place (gated branching's result: one conv-BN + the block's shortcut, then its
post-add ReLU site), ``aux_exit`` keeps the stages up to one and adds the auxiliary classifier's
head (the shallow paper's AC). The modules they build live here, below every method and below the
export that replays them; the methods only train them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.models.registry import ModelSpec
from relucut.recipe import check_structure_op
from relucut.site_module import is_site_module


# -- a block without its inner ReLU ---------------------------------------------------------------
def shallow_replacement(block: nn.Module, kernel: int = 3) -> nn.Sequential:
    """A fresh conv-BN with the input/output shape of ``block``'s conv-BN-conv-BN pair.

    For a zoo ``BasicBlock`` (stride and channels taken from its first conv). The weights are new:
    two padded convs do not compose exactly, so the shallow-network method trains this one.
    """
    from relucut.models.resnet import BasicBlock

    if not isinstance(block, BasicBlock):
        raise TypeError(f"shallow_replacement takes a zoo BasicBlock, got {type(block).__name__}")
    first, second = block.conv1, block.conv2
    conv = nn.Conv2d(first.in_channels, second.out_channels, kernel, stride=first.stride,
                     padding=kernel // 2, bias=False)
    pair = nn.Sequential()
    pair.conv, pair.bn = conv, nn.BatchNorm2d(second.out_channels)
    param = first.weight
    return pair.to(device=param.device, dtype=param.dtype)


class ConvBNShortcut(nn.Module):
    """A zoo ``BasicBlock`` with its inner ReLU dropped and its conv-BN pair merged into one:
    ``relu2(bn(conv(x)) + shortcut(x))``. The shortcut (identity or projection) and the post-add
    ReLU keep the block's names, so the post-add site keeps its address (``s1_0_relu2``) and mask.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, shortcut: nn.Module, relu2: nn.Module):
        super().__init__()
        self.conv, self.bn, self.shortcut, self.relu2 = conv, bn, shortcut, relu2

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.bn(self.conv(x)) + self.shortcut(x))


def shallow_shortcut_replacement(block: nn.Module, kernel: int = 3) -> ConvBNShortcut:
    """``block`` (a zoo ``BasicBlock``) without its inner ReLU: a fresh conv-BN in place of its
    conv-BN-ReLU-conv-BN, and the block's own shortcut and post-add ReLU modules (shared, so a
    trained projection and a learned post-add mask carry over; a fresh block brings fresh ones)."""
    pair = shallow_replacement(block, kernel)
    return ConvBNShortcut(pair.conv, pair.bn, block.shortcut, block.relu2)



# -- the auxiliary exit ------------------------------------------------------------------------------
class AuxHead(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


def stage_channels(model: nn.Module, stage: str, input_size: tuple[int, ...]) -> int:
    """Channels of stage ``stage``'s output (one forward of a zero input)."""
    seen = {}

    def record(_module, _inputs, output):
        seen["c"] = output.shape[1]

    handle = model.get_submodule(stage).register_forward_hook(record)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros((1, *input_size), device=param.device))
    finally:
        handle.remove()
        model.train(was)
    return int(seen["c"])


def check_aux_model(model: nn.Module, after: str) -> list[str]:
    """The stages up to and including ``after``; only zoo ResNets (stem + stages) qualify."""
    names = list(getattr(model, "stage_names", ()))
    if not names or not hasattr(model, "stem") or not hasattr(model, "resize") or after not in names[1:-1]:
        raise RelucutError(
            f"--aux-classifier needs a zoo ResNet and a stage before the last one (got '{after}'); "
            f"this model's stages are: {', '.join(names) or 'undeclared'}"
        )
    return names[1:names.index(after) + 1]


class AuxExit(nn.Module):
    """The deployed AC model: input resize, stem, the stages up to ``after``, then the AC head.

    Submodules keep the names they had in the full model, so site names do not change. An export
    records it as the structure op ``{"op": "aux_exit", "after": after}`` (``relucut.export``).
    """

    def __init__(self, model: nn.Module, head: AuxHead, after: str):
        super().__init__()
        stages = check_aux_model(model, after)
        self.stage_names = ("stem", *stages)
        self.resize, self.stem = model.resize, model.stem
        for name in stages:
            setattr(self, name, model.get_submodule(name))
        self.aux = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.resize(x))
        for name in self.stage_names[1:]:
            x = getattr(self, name)(x)
        return self.aux(x)


# -- replaying the ops -----------------------------------------------------------------------------
# kind -> builder of a fresh replacement from the block it replaces (weights come from model.pt)
BLOCK_REPLACEMENTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    # the block without its inner ReLU: one conv-BN + its shortcut, then its post-add ReLU site
    "conv_bn_shortcut": shallow_shortcut_replacement,
    # exports before the fix: one conv-BN alone, no shortcut, no post-add ReLU (still replayed)
    "conv_bn": shallow_replacement,
}


def _submodule(model: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise RelucutError(f"recipe does not fit the model: it has no {what} '{path}'") from None


def build_replacement(block: nn.Module, kind: str, path: str = "?") -> nn.Module:
    """A fresh ``kind`` replacement of ``block`` (one-line errors for unknown kinds and blocks)."""
    builder = BLOCK_REPLACEMENTS.get(kind)
    if builder is None:
        raise RelucutError(f"unknown block replacement kind '{kind}' at '{path}'; "
                           f"this relucut knows {', '.join(BLOCK_REPLACEMENTS)}")
    try:
        return builder(block)
    except TypeError:
        raise RelucutError(f"block '{path}' is a {type(block).__name__}, which replacement '{kind}' "
                           "cannot replace; only zoo two-conv BasicBlocks have a shallow form") from None


def _layout(module: nn.Module) -> list[tuple[str, Any]]:
    """Module names and types and parameter shapes, ReLU sites aside (a plan decides those)."""
    sites = [name for name, m in module.named_modules() if name and is_site_module(m)]

    def in_site(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in sites)

    modules = [(name, type(m)) for name, m in module.named_modules() if not in_site(name)]
    return modules + [(name, tuple(t.shape)) for name, t in module.state_dict().items() if not in_site(name)]


def replacement_kind(original: nn.Module, replaced: nn.Module, path: str = "?") -> str:
    """The kind whose fresh replacement of ``original`` has ``replaced``'s modules and shapes."""
    for kind in BLOCK_REPLACEMENTS:
        try:
            fresh = build_replacement(original, kind, path)
        except RelucutError:
            continue
        if _layout(fresh) == _layout(replaced):
            return kind
    raise RelucutError(f"block '{path}' ({type(replaced).__name__}) is none of the known shallow forms "
                       f"({', '.join(BLOCK_REPLACEMENTS)}); replace blocks with relucut.finegrained.gated")


def _replace_block(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    path = step["path"]
    model.set_submodule(path, build_replacement(_submodule(model, path, "block"), step["kind"], path))
    return model


def _aux_exit(model: nn.Module, step: dict[str, Any], spec: ModelSpec) -> nn.Module:
    after = step["after"]
    check_aux_model(model, after)
    head = AuxHead(stage_channels(model, after, spec.input_size), spec.num_classes)
    return AuxExit(model, head, after)


def apply_structure(model: nn.Module, structure: Sequence[dict[str, Any]], spec: ModelSpec) -> nn.Module:
    """``model`` (spec-built) with the recipe's structure ops applied in order."""
    for step in structure:
        check_structure_op(step)
        if step["op"] == "replace_block":
            model = _replace_block(model, step)
        else:
            model = _aux_exit(model, step, spec)
    return model


__all__ = ["BLOCK_REPLACEMENTS", "AuxExit", "AuxHead", "ConvBNShortcut", "apply_structure", "build_replacement",
           "check_aux_model", "replacement_kind", "shallow_replacement", "shallow_shortcut_replacement", "stage_channels"]

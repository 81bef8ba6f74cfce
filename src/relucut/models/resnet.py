"""ResNets for small images as DeepReDuce §4 defines them.

A 3x3 stem conv, no max-pool, no down-sampling after the stem or in the first stage;
stages s1..s4 at strides 1, 2, 2, 2. Every ReLU is its own module, so each call site has a
stable address (``s1.0.relu1`` -> site ``s1_0_relu1``). HybReNets (DeepReShape) are the same
network with per-stage width multipliers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.models.common import InputResize, ZooModel, check_ints, stage_widths
from relucut.models.registry import register_model


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(cout)


def projection(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    conv, bn = conv_bn(cin, cout, kernel=1, stride=stride)
    return nn.Sequential(conv, bn)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut, then ReLU: two ReLU sites."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, stride=stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(cout, cout)
        self.shortcut = projection(cin, cout, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SingleConvBlock(nn.Module):
    """conv-BN + shortcut, then ReLU: ResNet9's first-stage block (one 3x3 conv)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, stride=stride)
        self.shortcut = projection(cin, cout, stride)
        self.relu1 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.bn1(self.conv1(x)) + self.shortcut(x))


class ConvBNReLU(nn.Sequential):
    """A plain conv-BN-ReLU: ResNet6's single layer per stage."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        conv, bn = conv_bn(cin, cout, stride=stride)
        super().__init__()
        self.conv, self.bn, self.relu = conv, bn, nn.ReLU()


BLOCKS = {"basic": BasicBlock, "single": SingleConvBlock, "plain": ConvBNReLU}


RHO_MODES = ("pool", "stride")  # rho < 1 by average-pooling the input, or by a strided stem conv


def integer_stride(rho: float) -> int | None:
    """1/rho when it is a whole stride (rho 0.5 -> 2, 0.25 -> 4), else None."""
    stride = round(1 / rho)
    return stride if abs(stride * rho - 1) <= 1e-9 else None


def stem_stride_for(rho: float, rho_mode: str) -> int:
    """The stem conv's stride: 1 when the input is pooled, 1/rho (an integer) for ``rho_mode="stride"``
    (DeepReDuce's model zoo halves resolution with a stride-2 stem conv)."""
    if rho_mode not in RHO_MODES:
        raise RelucutError(f"unknown rho_mode '{rho_mode}'; use {' or '.join(RHO_MODES)}")
    if rho_mode == "pool" or rho == 1.0:
        return 1
    stride = integer_stride(rho)
    if stride is None:
        raise RelucutError(f"rho_mode 'stride' needs 1/rho to be an integer stride, got rho={rho}; "
                           "use rho 0.5 or 0.25, or rho_mode 'pool'")
    return stride


class ResNet(ZooModel):
    """stem -> s1..sN -> global average pool -> fc, with one block type per stage."""

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        block_types: Sequence[str],
        num_classes: int = 10,
        in_chans: int = 3,
        rho: float = 1.0,
        strides: Sequence[int] | None = None,
        rho_mode: str = "pool",
    ):
        super().__init__()
        n = len(blocks)
        strides = tuple(strides or (1,) + (2,) * (n - 1))
        self.stage_names = ("stem",) + tuple(f"s{i + 1}" for i in range(n))
        stem_stride = stem_stride_for(rho, rho_mode)
        self.resize = InputResize(rho if stem_stride == 1 else 1.0)
        conv, bn = conv_bn(in_chans, widths[0], stride=stem_stride)
        self.stem = nn.Sequential()
        self.stem.conv, self.stem.bn, self.stem.relu = conv, bn, nn.ReLU()
        cin = widths[0]
        for i, (count, width, kind, stride) in enumerate(zip(blocks, widths, block_types, strides)):
            block = BLOCKS[kind]
            layers = [block(cin if j == 0 else width, width, stride if j == 0 else 1) for j in range(count)]
            setattr(self, f"s{i + 1}", nn.Sequential(*layers))
            cin = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.resize(x))
        for name in self.stage_names[1:]:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet(
    default_blocks: Sequence[int],
    block_types: Sequence[str],
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    base_width: int = 64,
    widths: Sequence[int] | None = None,
    multipliers: Sequence[float] = (1, 2, 4, 8),
    blocks: Sequence[int] | None = None,
    alpha: float = 1.0,
    rho: float = 1.0,
    rho_mode: str = "pool",
) -> ResNet:
    blocks = check_ints("blocks", blocks, len(default_blocks)) or tuple(default_blocks)
    for kind, count in zip(block_types, blocks):
        if kind == "plain" and count != 1:
            raise RelucutError("resnet6 has exactly one conv per stage; use --blocks 1,1,1,1")
    return ResNet(
        blocks=blocks,
        widths=stage_widths(base_width, multipliers, widths, alpha),
        block_types=block_types,
        num_classes=num_classes,
        in_chans=in_chans,
        rho=rho,
        rho_mode=rho_mode,
    )


@register_model
def resnet18(**kw) -> ResNet:
    """ResNet18 for small images (DeepReDuce): 557,056 ReLUs at 32x32."""
    return resnet((2, 2, 2, 2), ("basic",) * 4, **kw)


@register_model
def resnet34(**kw) -> ResNet:
    """ResNet34 for small images (DeepReDuce)."""
    return resnet((3, 4, 6, 3), ("basic",) * 4, **kw)


@register_model
def resnet10(**kw) -> ResNet:
    """ResNet18 with one block per stage (DeepReDuce Table 7/9)."""
    return resnet((1, 1, 1, 1), ("basic",) * 4, **kw)


@register_model
def resnet9(**kw) -> ResNet:
    """ResNet10 whose first-stage block has a single 3x3 conv (DeepReDuce Table 7)."""
    return resnet((1, 1, 1, 1), ("single", "basic", "basic", "basic"), **kw)


@register_model
def resnet6(**kw) -> ResNet:
    """One conv-BN-ReLU per stage (DeepReDuce Table 9)."""
    return resnet((1, 1, 1, 1), ("plain",) * 4, **kw)

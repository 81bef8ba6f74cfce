"""MobileNet v1 and v2 in their usual CIFAR forms (stride-1 stem, first down-sampling later)."""

from __future__ import annotations

import torch
from torch import nn

from relucut.models.common import InputResize, ZooModel, scale_width, check_alpha
from relucut.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    layer = nn.Sequential()
    layer.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    layer.bn, layer.relu = nn.BatchNorm2d(cout), nn.ReLU()
    return layer


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = _conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pw = _conv_bn_relu(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    """1x1 expand-ReLU, 3x3 depthwise-ReLU, 1x1 linear projection (+ identity when shapes allow)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn_relu(cin, hidden, 1)
        self.dw = _conv_bn_relu(hidden, hidden, 3, stride, groups=hidden)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.project(self.dw(self.expand(x))))
        return out + x if self.residual else out


# (out channels, stride) per block, grouped into stages by output resolution.
V1_STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)

# (expansion, out channels, repeats, stride) per group, grouped into stages by resolution.
V2_STAGES = (
    ((1, 16, 1, 1), (6, 24, 2, 1)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


class MobileNet(ZooModel):
    def __init__(self, stem: nn.Module, stages: list[nn.Sequential], head: nn.Module | None,
                 features: int, num_classes: int, rho: float):
        super().__init__()
        self.stage_names = ("stem",) + tuple(f"s{i + 1}" for i in range(len(stages)))
        self.resize, self.stem = InputResize(rho), stem
        for i, stage in enumerate(stages):
            setattr(self, f"s{i + 1}", stage)
        if head is not None:
            self.head = head
            self.stage_aliases = {"head": self.stage_names[-1]}
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.resize(x))
        for name in self.stage_names[1:]:
            x = getattr(self, name)(x)
        if hasattr(self, "head"):
            x = self.head(x)
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model
def mobilenet_v1(num_classes: int = 10, in_chans: int = 3, alpha: float = 1.0, rho: float = 1.0) -> MobileNet:
    """MobileNetV1, CIFAR form: stride-1 stem, 13 depthwise-separable blocks."""
    alpha = check_alpha(alpha)
    cin = scale_width(32, alpha)
    stem = _conv_bn_relu(in_chans, cin, 3)
    stages = []
    for spec in V1_STAGES:
        blocks = []
        for cout, stride in spec:
            cout = scale_width(cout, alpha)
            blocks.append(DepthwiseSeparable(cin, cout, stride))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    return MobileNet(stem, stages, None, cin, num_classes, rho)


@register_model
def mobilenet_v2(num_classes: int = 10, in_chans: int = 3, alpha: float = 1.0, rho: float = 1.0) -> MobileNet:
    """MobileNetV2, CIFAR form: stride-1 stem and first 24-channel group at stride 1."""
    alpha = check_alpha(alpha)
    cin = scale_width(32, alpha)
    stem = _conv_bn_relu(in_chans, cin, 3)
    stages = []
    for spec in V2_STAGES:
        blocks = []
        for expansion, cout, repeats, stride in spec:
            cout = scale_width(cout, alpha)
            for j in range(repeats):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if j == 0 else 1))
                cin = cout
        stages.append(nn.Sequential(*blocks))
    features = scale_width(1280, alpha)
    return MobileNet(stem, stages, _conv_bn_relu(cin, features, 1), features, num_classes, rho)

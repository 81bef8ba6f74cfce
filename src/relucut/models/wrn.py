"""Pre-activation wide ResNet (Zagoruyko & Komodakis), as SENet and the shallow paper use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from relucut.models.common import InputResize, ZooModel, check_ints, stage_widths
from relucut.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv + shortcut (projected from the activated input if needed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.project = stride != 1 or cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if self.project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        shortcut = self.shortcut(act) if self.project else x
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + shortcut


class WideResNet(ZooModel):
    stage_names = ("s1", "s2", "s3")
    stage_aliases = {"post": "s3"}  # the final BN-ReLU works at s3's resolution

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], stem_width: int,
                 num_classes: int, in_chans: int, rho: float):
        super().__init__()
        self.resize = InputResize(rho)
        self.stem = nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False)
        cin = stem_width
        for i, (count, width) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = [PreActBlock(cin if j == 0 else width, width, stride if j == 0 else 1) for j in range(count)]
            setattr(self, f"s{i + 1}", nn.Sequential(*layers))
            cin = width
        self.post = nn.Sequential()
        self.post.bn, self.post.relu = nn.BatchNorm2d(cin), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.resize(x))
        x = self.post(self.s3(self.s2(self.s1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def wide_resnet(depth: int, widen: int, *, num_classes: int = 10, in_chans: int = 3,
                base_width: int = 16, widths: Sequence[int] | None = None,
                blocks: Sequence[int] | None = None, alpha: float = 1.0, rho: float = 1.0) -> WideResNet:
    n = (depth - 4) // 6
    stage = stage_widths(base_width, (widen, 2 * widen, 4 * widen), widths, alpha)
    stem = stage_widths(base_width, (1,), None, alpha)[0]
    return WideResNet(check_ints("blocks", blocks, 3) or (n, n, n), stage, stem, num_classes, in_chans, rho)


@register_model
def wrn22_8(**kw) -> WideResNet:
    """Pre-activation WRN-22-8: 1,392,640 ReLUs at 32x32 (SENet, shallow paper)."""
    return wide_resnet(22, 8, **kw)

"""VGG16 in its usual CIFAR form: 13 conv-BN-ReLU layers in 5 stages, one linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from relucut.models.common import InputResize, ZooModel, check_alpha, scale_width
from relucut.models.registry import register_model

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(ZooModel):
    def __init__(self, stages, num_classes: int, in_chans: int, alpha: float, rho: float):
        super().__init__()
        self.stage_names = tuple(f"s{i + 1}" for i in range(len(stages)))
        self.resize = InputResize(rho)
        cin = in_chans
        for i, widths in enumerate(stages):
            stage = nn.Sequential()
            for j, width in enumerate(widths):
                width = scale_width(width, alpha)
                layer = nn.Sequential()
                layer.conv = nn.Conv2d(cin, width, 3, padding=1, bias=False)
                layer.bn, layer.relu = nn.BatchNorm2d(width), nn.ReLU()
                stage.add_module(str(j), layer)
                cin = width
            # ceil_mode keeps 1x1 maps alive on tiny inputs (digits); identical at 32x32
            stage.add_module("pool", nn.MaxPool2d(2, ceil_mode=True))
            setattr(self, f"s{i + 1}", stage)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))


@register_model
def vgg16(num_classes: int = 10, in_chans: int = 3, alpha: float = 1.0, rho: float = 1.0) -> VGG:
    """VGG16 with BN, CIFAR form (stride-1 convs, 5 max-pools, one linear classifier)."""
    return VGG(VGG16_STAGES, num_classes, in_chans, check_alpha(alpha), rho)

"""The 3-stage CIFAR ResNets of He et al. (depth 6n+2): widths 16/32/64, n blocks per stage."""

from __future__ import annotations

from collections.abc import Sequence

from relucut.models.common import check_ints, stage_widths
from relucut.models.registry import register_model
from relucut.models.resnet import ResNet


def cifar_resnet(
    n: int,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    base_width: int = 16,
    widths: Sequence[int] | None = None,
    blocks: Sequence[int] | None = None,
    alpha: float = 1.0,
    rho: float = 1.0,
) -> ResNet:
    return ResNet(
        blocks=check_ints("blocks", blocks, 3) or (n, n, n),
        widths=stage_widths(base_width, (1, 2, 4), widths, alpha),
        block_types=("basic",) * 3,
        num_classes=num_classes,
        in_chans=in_chans,
        rho=rho,
    )


@register_model
def resnet20(**kw) -> ResNet:
    """CIFAR ResNet20: 3 stages x 3 basic blocks."""
    return cifar_resnet(3, **kw)


@register_model
def resnet32(**kw) -> ResNet:
    """CIFAR ResNet32: 3 stages x 5 basic blocks."""
    return cifar_resnet(5, **kw)


@register_model
def resnet56(**kw) -> ResNet:
    """CIFAR ResNet56: 3 stages x 9 basic blocks (DeepReDuce Table 8/10)."""
    return cifar_resnet(9, **kw)


@register_model
def resnet110(**kw) -> ResNet:
    """CIFAR ResNet110: 3 stages x 18 basic blocks."""
    return cifar_resnet(18, **kw)

"""Auxiliary classifier (shallow paper §4): a second, shallower exit trained by auxiliary KD.

The AC sits after stage ``after`` (the paper's ResNet18: after the third basic-block layer,
before the final one). It is a global pool + linear layer, so it adds no ReLU; its prediction
skips every later stage.
"""

from __future__ import annotations

import torch
from torch import nn

from relucut.errors import RelucutError


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


class AuxTap:
    """Runs the AC head on stage ``after``'s output during each forward of ``model``."""

    def __init__(self, model: nn.Module, head: AuxHead, after: str):
        self.head, self.logits = head, None
        self._handle = model.get_submodule(after).register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        self.logits = self.head(output)

    def close(self) -> None:
        self._handle.remove()


def make_aux_head(model: nn.Module, after: str, input_size: tuple[int, ...], num_classes: int) -> AuxHead:
    check_aux_model(model, after)
    device = next(model.parameters()).device
    return AuxHead(stage_channels(model, after, input_size), num_classes).to(device)


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

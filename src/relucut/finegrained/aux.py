"""Auxiliary classifier (shallow paper §4): a second, shallower exit trained by auxiliary KD.

The AC sits after stage ``after`` (the paper's ResNet18: after the third basic-block layer,
before the final one). It is a global pool + linear layer, so it adds no ReLU; its prediction
skips every later stage.
"""

from __future__ import annotations

from torch import nn

from relucut.structure import AuxHead, check_aux_model, stage_channels


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

"""What training hands to extra loss terms and callbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class LossContext:
    """One training step, as an ``extra_loss(ctx)`` sees it.

    ``model`` is the plain student (not its DDP/compiled wrapper), so hooks and parameters are the
    caller's own. Forward hooks the caller registered on ``model`` (or ``teacher``) before training
    have run on exactly ``inputs`` by the time ``extra_loss`` is called: read what they captured.
    """

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    teacher: nn.Module | None
    epoch: int
    step: int  # global step, counted from the start of training
    config: Any


class Callback(Protocol):
    """Both methods are optional; derive any state from ``epoch`` so that resumed runs replay it."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None: ...

    def on_epoch_end(self, epoch: int, model: nn.Module, metrics: dict) -> None: ...

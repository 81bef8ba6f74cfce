"""Accuracy and loss of a model on one split, in batches from memory."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from relucut.data.splits import DataSplits, Split
from relucut.errors import RelucutError
from relucut.train.batches import DeviceBatches


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: DeviceBatches, batch_size: int = 512, bf16: bool = False) -> dict:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=batches.device)
    correct = torch.zeros((), dtype=torch.long, device=batches.device)
    for x, y in batches.batches(batch_size):
        with autocast(batches.device, bf16):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(batches), 1)
    return {"acc": float(correct) / n, "loss": float(loss_sum) / n, "n": len(batches)}


def evaluate(
    model: nn.Module,
    data: DataSplits | Split,
    *,
    split: str = "test",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 512,
    bf16: bool = False,
) -> dict:
    """Top-1 accuracy and mean cross-entropy: ``{"acc", "loss", "n"}``.

    ``data`` is a :class:`DataSplits` (``split`` picks the split; its own normalization is used) or
    one :class:`Split` with the ``mean``/``std`` the model was trained with.
    """
    if isinstance(data, DataSplits):
        mean, std = mean or data.mean, std or data.std
        data = data.split(split)
    if mean is None or std is None:
        raise RelucutError("evaluate needs the training normalization: pass mean= and std=, or a DataSplits")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batches = DeviceBatches(data, mean, std, device)
    return evaluate_batches(model, batches, batch_size, bf16)

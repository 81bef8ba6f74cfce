"""SENet stage 1 by sparse training: each conv's share of the weights a sparse network keeps.

The one-shot probe (``sensitivity.pruning_keep_fractions``) prunes the trained weights once by
global magnitude. The SENet papers take the pruning sensitivity from sparse *training*: the
network trains while it is held at a parameter density, so weights that matter grow and the
rest fade. Here a copy of the base trains for a few epochs with every conv weight masked in the
forward pass (``torch.nn.utils.parametrize``; the dense weights keep their gradients, so pruned
weights can grow back), the global magnitude mask re-chosen at each epoch start on a cubic
schedule from density 1 down to the target (Zhu & Gupta, 2017), KD from the base. The keep
fractions are read from the last epoch's masks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from relucut.data.splits import DataSplits
from relucut.train.config import TrainConfig
from relucut.train.loop import train


class _MaskedWeight(nn.Module):
    """Forward: the weight times its binary mask; backward: the dense gradient (straight-through)."""

    def __init__(self, shape: torch.Size):
        super().__init__()
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (weight * self.mask - weight).detach()


def scheduled_density(epoch: int, epochs: int, density: float) -> float:
    """Cubic decay from 1 (before epoch 0) to ``density`` (the last epoch)."""
    done = min(1.0, (epoch + 1) / max(1, epochs))
    return density + (1.0 - density) * (1.0 - done) ** 3


class _Sparsifier:
    """Engine callback: re-chooses the global magnitude masks at each epoch start."""

    def __init__(self, convs: dict[str, nn.Module], epochs: int, density: float):
        self.convs, self.epochs, self.density = convs, epochs, density

    def on_epoch_start(self, epoch: int, _model: nn.Module) -> None:
        dense = {n: c.parametrizations.weight.original.detach() for n, c in self.convs.items()}
        magnitudes = torch.cat([w.abs().flatten() for w in dense.values()])
        keep = max(1, round(scheduled_density(epoch, self.epochs, self.density) * magnitudes.numel()))
        threshold = torch.topk(magnitudes, keep).values.min()
        for name, conv in self.convs.items():
            conv.parametrizations.weight[0].mask.copy_(dense[name].abs() >= threshold)


def sparse_training_keep_fractions(model: nn.Module, teacher: nn.Module, data: DataSplits, stage: TrainConfig,
                                   density: float, run_dir: Path, progress: bool = True) -> dict[str, float]:
    """Conv path -> fraction of its weights kept after sparse training of a copy of ``model``.

    ``stage`` is the engine config of the probe (its epochs, lr, KD); a rerun resumes it."""
    probe = copy.deepcopy(model).train()
    convs = {n: m for n, m in probe.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    for conv in convs.values():
        parametrize.register_parametrization(conv, "weight", _MaskedWeight(conv.weight.shape))
    sparsifier = _Sparsifier(convs, stage.epochs, density)
    train(stage, run_dir, model=probe, teacher=teacher, data=data, progress=progress, callbacks=[sparsifier],
          label="SENet sparse probe")
    sparsifier.on_epoch_start(stage.epochs - 1, probe)  # the final masks, from the selected weights
    return {n: float(c.parametrizations.weight[0].mask.float().mean()) for n, c in convs.items()}

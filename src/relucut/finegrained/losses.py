"""Fine-tuning losses of the shallow paper (eq. 2): KD + CE + a feature-map term.

L = kd_weight * KL(softmax(z_t / T) || softmax(z_s / T)) * T^2 + (1 - kd_weight) * CE(y, z_s)
    + feature_weight / 2 * sum over maps of D(student map, teacher map)

(``feature_scale="full"``: feature_weight * sum ..., as RLNet's code weighs its attention term.)

The KD part is the training engine's (``relucut.train.kd``). D has two forms:

* ``attention`` (default): attention transfer (Zagoruyko & Komodakis, 2017), which the SENet
  line's code uses with weight 1000: per stage output, the channel mean of the squared
  activations, flattened and L2-normalized per sample; D is the squared difference averaged over
  positions and batch. With weight 1000 this term starts near the KD term's size.
* ``pram``: eq. 2 read literally, the batch-mean L2 distance of whole L2-normalized C*H*W block
  outputs. With the paper's weight 1000 it is ~1000x the KD term and swamps it (measured on
  CIFAR-10: 3,668 against 1.35), so it is kept only for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relucut.train.kd import kd_loss

FEATURE_LOSSES = ("attention", "pram")
FEATURE_SCALES = ("half", "full")


def pram(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over map pairs of the batch-mean L2 distance between L2-normalized activation maps."""
    return _sum_pairs(student_maps, teacher_maps,
                      lambda s, t: (F.normalize(s.flatten(1), dim=1) - F.normalize(t.flatten(1), dim=1)).norm(dim=1).mean())


def attention_map(x: torch.Tensor) -> torch.Tensor:
    """The per-sample, L2-normalized spatial attention of a (N, C, H, W) map: mean_c x^2."""
    return F.normalize(x.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over map pairs of the mean squared difference of their attention maps."""
    return _sum_pairs(student_maps, teacher_maps,
                      lambda s, t: (attention_map(s) - attention_map(t)).pow(2).mean())


def _sum_pairs(student_maps, teacher_maps, distance) -> torch.Tensor:
    if len(student_maps) != len(teacher_maps):
        raise ValueError("the feature loss needs as many student maps as teacher maps")
    terms = [distance(s, t) for s, t in zip(student_maps, teacher_maps)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def feature_distance(kind: str, student_maps, teacher_maps) -> torch.Tensor:
    return (attention_transfer if kind == "attention" else pram)(student_maps, teacher_maps)


@dataclass
class LossWeights:
    kd_weight: float = 0.9  # lambda: the KD share; CE gets 1 - kd_weight
    feature_weight: float = 1000.0  # beta
    kd_temperature: float = 4.0
    feature_loss: str = "attention"  # or "pram" (eq. 2 literally)
    feature_scale: str = "half"  # the term's factor: beta / 2 (eq. 2) or "full": beta (RLNet's code)

    @property
    def feature_factor(self) -> float:
        """What multiplies the summed map distances."""
        return self.feature_weight / 2 if self.feature_scale == "half" else self.feature_weight


def combined_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    student_maps: Sequence[torch.Tensor] = (),
    teacher_maps: Sequence[torch.Tensor] = (),
    weights: LossWeights | None = None,
) -> torch.Tensor:
    """Eq. 2 (default weights: the paper's); without a teacher it is plain cross-entropy."""
    weights = weights or LossWeights()
    if teacher_logits is None:
        return F.cross_entropy(student_logits.float(), targets)
    loss = kd_loss(student_logits, teacher_logits, targets, weights.kd_temperature, weights.kd_weight)
    if weights.feature_weight and len(student_maps):
        distance = feature_distance(weights.feature_loss, student_maps, teacher_maps)
        loss = loss + weights.feature_factor * distance
    return loss


class ActivationTap:
    """Records the outputs of named submodules on each forward (forward hooks)."""

    def __init__(self, model: nn.Module, paths: Sequence[str]):
        self.paths = list(paths)
        self.maps: dict[str, torch.Tensor] = {}
        self._handles = [model.get_submodule(p).register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path: str):
        def record(_module, _inputs, output):
            self.maps[path] = output
        return record

    def take(self) -> list[torch.Tensor]:
        out = [self.maps[p] for p in self.paths]
        self.maps = {}
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()

"""Fine-tuning losses of the shallow paper (eq. 2): KD + CE + PRAM.

L = lam * KL(softmax(z_ar / rho) || softmax(z_pr / rho)) * rho^2 + (1 - lam) * CE(y, z_pr)
    + beta / 2 * sum_m mean_batch || psi_pr^m / ||psi_pr^m|| - psi_ar^m / ||psi_ar^m|| ||_2

The KL term carries the usual rho^2 factor (Hinton et al.) so its gradient does not shrink with
the temperature; PRAM is the L2 norm (not squared) of the difference of the per-sample,
L2-normalized, vectorized activation maps, averaged over the batch, as eq. 2 writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from relucut.train.kd import soft_kd


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, rho: float) -> torch.Tensor:
    """KL(softmax(teacher / rho) || softmax(student / rho)) * rho^2, averaged over the batch."""
    return soft_kd(student_logits, teacher_logits, rho)


def pram(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over map pairs of the batch-mean L2 distance between L2-normalized activation maps."""
    if len(student_maps) != len(teacher_maps):
        raise ValueError("PRAM needs the same number of student and teacher maps")
    total = None
    for s, t in zip(student_maps, teacher_maps):
        s = F.normalize(s.flatten(1), dim=1)
        t = F.normalize(t.flatten(1), dim=1)
        term = (s - t).norm(dim=1).mean()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


@dataclass
class LossWeights:
    lam: float = 0.9  # KD weight (lambda)
    beta: float = 1000.0  # PRAM weight
    rho: float = 4.0  # KD temperature


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
    ce = F.cross_entropy(student_logits, targets)
    if teacher_logits is None:
        return ce
    loss = weights.lam * kd_kl(student_logits, teacher_logits, weights.rho) + (1 - weights.lam) * ce
    if weights.beta and len(student_maps):
        loss = loss + weights.beta / 2 * pram(student_maps, teacher_maps)
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

"""Knowledge distillation (Hinton et al. 2015) as DeepReDuce uses it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    weight: float = 0.9,
) -> torch.Tensor:
    """``weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - weight) * CE(s, y)``, batch means.

    The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T grows.
    """
    hard = F.cross_entropy(student_logits.float(), targets)
    return weight * soft_kd(student_logits, teacher_logits, temperature) + (1.0 - weight) * hard


def soft_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean: the soft term of :func:`kd_loss`."""
    t = float(temperature)
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)

"""Pieces the SNL and SENet pipelines share: the KD(+PRAM) fine-tuning step and mask freezing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from relucut.finegrained.losses import ActivationTap, LossWeights, combined_loss
from relucut.finegrained.mask_site import LearnableMaskSite
from relucut.train.checkpoint import atomic_torch_save, rng_state, set_rng_state


def block_paths(model: nn.Module) -> list[str]:
    """Paths of zoo blocks (children of declared stages, e.g. 's1.0'): where PRAM compares maps."""
    out = []
    for stage in getattr(model, "stage_names", ())[1:]:
        module = getattr(model, stage, None)
        if isinstance(module, nn.Sequential):
            out += [f"{stage}.{i}" for i in range(len(module))]
    return out


class KDLoss:
    """Eq. 2 between ``student`` and a frozen ``teacher``; PRAM over ``pram_paths`` when beta > 0."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, weights: LossWeights,
                 pram_paths: list[str] = (), extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        self.student, self.teacher, self.weights, self.extra = student, teacher, weights, extra
        use_pram = teacher is not None and weights.beta > 0 and len(pram_paths) > 0
        self.s_tap = ActivationTap(student, pram_paths) if use_pram else None
        self.t_tap = ActivationTap(teacher, pram_paths) if use_pram else None
        self.last_teacher_logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                self.teacher.eval()
                t_logits = self.teacher(x)
        self.last_teacher_logits = t_logits
        s_logits = self.student(x)
        s_maps = self.s_tap.take() if self.s_tap else ()
        t_maps = [m.detach() for m in self.t_tap.take()] if self.t_tap else ()
        loss = combined_loss(s_logits, t_logits, y, s_maps, t_maps, self.weights)
        if self.extra is not None:
            loss = loss + self.extra(x, y)
        return loss

    def close(self) -> None:
        for tap in (self.s_tap, self.t_tap):
            if tap:
                tap.close()


def mask_sites(model: nn.Module) -> dict[str, LearnableMaskSite]:
    return {p.replace(".", "_"): m for p, m in model.named_modules() if isinstance(m, LearnableMaskSite)}


def freeze_all(masks: dict[str, LearnableMaskSite], binary: dict[str, torch.Tensor] | None = None) -> None:
    """Freezes each site at ``binary[name]`` (default: its current hard mask)."""
    for name, site in masks.items():
        site.freeze(binary[name] if binary is not None else site.hard_mask())


def total_relus(masks: dict[str, LearnableMaskSite]) -> int:
    return sum(s.active_relus(s.shape) for s in masks.values())


def save_frozen(path: Path, model: nn.Module, extra: dict) -> None:
    """Saves a model whose learnable sites are frozen: masks, weights, RNGs and ``extra`` (atomically)."""
    state = {"masks": {n: m.mask for n, m in mask_sites(model).items()}, "state": model.state_dict(),
             "rng": rng_state(), **extra}
    atomic_torch_save(state, path)


def restore_frozen(model: nn.Module, input_size: tuple[int, ...], granularity: str, saved: dict) -> None:
    """Rebuilds what :func:`save_frozen` saved on a fresh copy of the same base model.

    The global RNGs are put back as they were, so the stages after it draw what they would have.
    """
    from relucut.finegrained.mask_site import install_mask_sites

    _, masks = install_mask_sites(model, input_size, granularity)
    freeze_all(masks, saved["masks"])
    model.load_state_dict(saved["state"])
    if saved.get("rng") is not None:
        set_rng_state(saved["rng"])

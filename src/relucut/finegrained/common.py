"""Pieces SNL and SENet share: stages on the training engine, the feature-map loss, mask helpers.

Every stage of a fine-grained method (base training, SNL search and fine-tuning, SENet mask
learning and fine-tuning) is one run of ``relucut.train.train`` in its own run directory under
the method's output folder, so each gets device-resident batches, bf16, channels_last, compile,
DDP, metrics.jsonl, progress, TensorBoard and the engine's bit-identical resume.
"""

from __future__ import annotations

import copy
import dataclasses
import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.finegrained.losses import ActivationTap, LossWeights, feature_distance
from relucut.finegrained.mask_site import LearnableMaskSite
from relucut.train.batches import DeviceBatches
from relucut.train.config import TrainConfig
from relucut.train.distributed import current_ranks
from relucut.train.hooks import LossContext


# Batch-norm statistics are re-estimated before each validation of a stage (unless the base config
# sets a count): masks and gates move the activations faster than the running averages follow.
BN_RECALIBRATION_BATCHES = 20


def stage_config(base: TrainConfig, **changes) -> TrainConfig:
    """``base`` (dataset, split, seed, batch size, device, ...) with one stage's schedule."""
    changes.setdefault("bn_recalibrate", base.bn_recalibrate or BN_RECALIBRATION_BATCHES)
    return dataclasses.replace(base, teacher=None, plan=None, **changes)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy to distill from: eval mode, no gradients."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def stage_paths(model: nn.Module) -> list[str]:
    """Declared stages after the stem ('s1', 's2', ...): where attention transfer compares maps."""
    return [s for s in getattr(model, "stage_names", ())[1:] if isinstance(getattr(model, s, None), nn.Module)]


def block_paths(model: nn.Module) -> list[str]:
    """Paths of zoo blocks (children of declared stages, e.g. 's1.0'): where literal PRAM compares."""
    out = []
    for stage in stage_paths(model):
        module = getattr(model, stage)
        if isinstance(module, nn.Sequential):
            out += [f"{stage}.{i}" for i in range(len(module))]
    return out


class FeatureLoss:
    """``feature_weight / 2 * D(student maps, teacher maps)`` (``feature_scale="full"``: without the
    halving) as an engine ``extra_loss``.

    Forward hooks on both networks record the maps during the engine's forward passes. Attention
    transfer compares stage outputs, literal PRAM block outputs (as eq. 2 is written).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, weights: LossWeights):
        paths = stage_paths(student) if weights.feature_loss == "attention" else block_paths(student)
        self.weights = weights
        self.student_tap = ActivationTap(student, paths)
        self.teacher_tap = ActivationTap(teacher, paths)

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        s_maps = self.student_tap.take()
        t_maps = [m.detach() for m in self.teacher_tap.take()]
        return self.weights.feature_factor * feature_distance(self.weights.feature_loss, s_maps, t_maps)

    def close(self) -> None:
        self.student_tap.close()
        self.teacher_tap.close()


def mask_sites(model: nn.Module) -> dict[str, LearnableMaskSite]:
    """The model's learnable mask sites by site name (fx names: dots become '_')."""
    return {p.replace(".", "_"): m for p, m in model.named_modules() if isinstance(m, LearnableMaskSite)}


def freeze_all(masks: dict[str, LearnableMaskSite], binary: dict[str, torch.Tensor] | None = None) -> None:
    """Freezes each site at ``binary[name]`` (default: its current hard mask). Under torchrun every
    rank computes the same masks from the same weights; rank 0's are sent to all, so they are
    identical bit for bit."""
    ranks = current_ranks()
    for name, site in masks.items():
        mask = binary[name] if binary is not None else site.hard_mask()
        if ranks.world > 1:
            mask = ranks.broadcast_(mask.to(device=site.scores.device, dtype=torch.uint8).contiguous()).bool()
        site.freeze(mask)


STEM_RELU = ("keep", "drop")


def drop_stem_relus(sites, masks: dict[str, LearnableMaskSite],
                    stem_relu: str) -> dict[str, LearnableMaskSite]:
    """``stem_relu="drop"``: the stem's ReLUs become identities (frozen all-zero masks, no
    polynomial), as in the ResNet18 of SNL's code and the papers' counts (491,520 ReLUs at 32x32);
    returns the masks the method still learns (all of them with "keep")."""
    if stem_relu not in STEM_RELU:
        raise RelucutError(f"unknown stem_relu '{stem_relu}'; use keep or drop")
    if stem_relu == "keep":
        return masks
    stem = {s.name for s in sites if s.stage == "stem"}
    for name in stem & set(masks):
        masks[name].linearize_("identity")
        masks[name].freeze(torch.zeros_like(masks[name].scores, dtype=torch.bool))
    return {n: m for n, m in masks.items() if n not in stem}


def total_relus(masks: dict[str, LearnableMaskSite]) -> int:
    return sum(s.active_relus(s.shape) for s in masks.values())


@torch.no_grad()
def relu_effect(model: nn.Module, masks: dict[str, LearnableMaskSite], data: DataSplits, batches: int = 2,
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per mask entry, the mean squared change its ReLU makes, E[(relu(x) - x)^2] = E[x^2; x < 0],
    on fixed un-augmented training images (eval mode): how much the network needs that ReLU."""
    device = next(model.parameters()).device
    sums = {n: torch.zeros_like(m.scores) for n, m in masks.items()}
    handles = []
    for n, m in masks.items():
        def hook(mod, inputs, _out, n=n):
            effect = (torch.relu(inputs[0]) - inputs[0]).float().square().mean(0)
            if mod.granularity == "channel":
                effect = effect.mean(dim=tuple(range(1, effect.dim())), keepdim=True)
            sums[n] += effect
        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        split = DeviceBatches(data.train, data.mean, data.std, device)
        for i, (x, _) in enumerate(split.batches(batch_size)):
            model(x)
            if i + 1 >= batches:
                break
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sums

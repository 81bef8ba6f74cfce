"""ReLUPruner (Li et al., AAAI 2026): ReLUs kept where a Taylor importance says they matter, pruned
progressively to the budget while the network trains, then fine-tuned with the masks fixed.

The spec is the authors' code (github.com/Orange2019220/ReluPruner at e74b70a; "env" below is its
``configs/cifar10_resnet18.env``, the other files are under ``relupruner/`` and ``scripts/``):

1. Prune (``prune/``): every ReLU becomes a pixel mask site, all kept. Each step the importance of
   every position is updated (``relucut.finegrained.relupruner_importance``) and every
   ``update_every`` steps one global top-k over all sites re-chooses the masks, k following the
   kept fraction of ``keep_fraction``: 1 during the warm-up, a cosine decay accelerated by a power
   1.5 down to the budget at ``target_at`` of the remaining epochs, then exactly the budget (masks
   re-chosen every 2 x ``update_every`` steps) to the end. Loss: 0.5 CE + 0.5 KD (T 4) from the
   all-ReLU teacher; SGD lr 0.05, constant (their decays at 150/180/210 come after 150 epochs).
2. Fine-tune (``finetune/``): masks frozen; 0.5 CE + 0.5 KD + 1000 x attention transfer on the
   outputs of stages 2..4 (their "PRAM", ``losses.py``); SGD lr 0.01, decays x0.1 at 150/180/210
   of 240 epochs; the best epoch on validation.

``cfg`` is a ``relucut.methods.relupruner.ReLUPrunerConfig`` (the registry sits above the algorithms).

Departures: the student starts from the all-ReLU base, like every relucut method (their configs
train it from scratch, ``INIT_FROM_TEACHER=0``: ``from_scratch=True``); their prunable ResNet has
no stem ReLU at all, here the stem's ReLUs compete for the budget like the others (theirs:
``linear_stem=True``); stage 1 ends with its last epoch (they keep the epoch at the budget best on
their validation set, CIFAR's test set); batch-norm statistics are re-estimated before each
validation (``stage_config``).
"""

from __future__ import annotations

import math
import os
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.finegrained.budget import check_budget
from relucut.finegrained.common import drop_stem_relus, freeze_all, frozen_copy, stage_config, stage_paths
from relucut.finegrained.losses import ActivationTap, attention_transfer
from relucut.finegrained.mask_site import install_mask_sites
from relucut.finegrained.relupruner_importance import TaylorPruning, check_schedule, target_epoch
from relucut.sites import find_sites
from relucut.train.batches import DeviceBatches
from relucut.train.config import TrainConfig
from relucut.train.hooks import LossContext
from relucut.train.loop import seed_everything, train

def check_run(cfg, base: TrainConfig, data: DataSplits):
    """Every check before training: the config's, the budget against ``base``'s network, and whether
    the keep schedule chooses masks at the budget with ``data`` at ``base``'s batch size. Cheap (it
    builds the network untrained): call it before claiming an output folder. Returns the config
    with ``update_every`` resolved (None: four mask choices an epoch)."""
    cfg.check()
    spec = base.spec()
    sites = find_sites(spec.build(), spec.input_size)
    stem = [s for s in sites if s.stage == "stem"] if cfg.linear_stem else []
    if cfg.linear_stem and not stem:
        raise RelucutError("linear_stem: this model has no stem ReLU; leave the option off")
    check_budget(cfg.budget, sum(s.numel for s in sites) - sum(s.numel for s in stem))
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's ranks, before the engine joins them
    steps = steps_per_epoch(base, data, world)
    if cfg.update_every is None:
        cfg = dataclasses.replace(cfg, update_every=max(1, steps // 4))
    check_schedule(cfg, steps)
    return cfg


def steps_per_epoch(base: TrainConfig, data: DataSplits, world: int = 1) -> int:
    """Training steps an epoch of ``base`` takes on ``data``, counted as the engine counts them."""
    split = data.train
    if base.limit_train is not None and base.limit_train < len(split):
        split = split.subset(torch.arange(base.limit_train))
    return DeviceBatches(split, data.mean, data.std).num_batches(max(2, base.batch_size // world), train=True,
                                                                 world=world)


# -- the method ------------------------------------------------------------------------------------
@dataclass
class ReLUPrunerResult:
    model: nn.Module
    prune_epochs_run: int
    budget_epoch: int  # the (0-based) epoch from which the masks are chosen at the budget
    mask_choices: int  # global top-k choices made in stage 1
    last_choice_step: int  # the global step of the last one (at the budget)
    choices: list[dict] = field(default_factory=list)  # step, epoch, kept of every choice


def relupruner(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig,
               cfg, workdir: Path, progress: bool = True) -> ReLUPrunerResult:
    """Runs both stages on ``model`` in place (it ends with frozen pixel masks of exactly
    ``cfg.budget`` ReLUs). ``base`` is the engine config the stages derive from (dataset, split,
    seed, batch size, device). Each stage resumes from its run directory under ``workdir``."""
    cfg = check_run(cfg, base, data)
    teacher = frozen_copy(teacher)  # the engine freezes the teacher it is given: not the caller's
    workdir = Path(workdir)
    if cfg.from_scratch:
        seed_everything(base.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    sites, masks = install_mask_sites(model, base.spec().input_size, "pixel", init=1.0, linearize=cfg.linearize)
    # linear_stem: identities (as their ResNet's stem), out of the pool the budget is chosen from
    masks = drop_stem_relus(sites, masks, "drop" if cfg.linear_stem else "keep")
    check_budget(cfg.budget, sum(math.prod(m.shape) for m in masks.values()))  # the model given may differ
    for site in masks.values():
        site.scores.requires_grad_(False)  # chosen by importance, not trained
    pruning = TaylorPruning(masks, cfg)
    stage = stage_config(base, epochs=cfg.prune_epochs, lr=cfg.lr, schedule="constant", select="last",
                         weight_decay=cfg.weight_decay, kd_weight=cfg.kd_weight,
                         kd_temperature=cfg.kd_temperature)
    try:
        final = train(stage, workdir / "prune", model=model, teacher=teacher, data=data, progress=progress,
                      callbacks=[pruning], label="ReLUPruner prune")
    finally:
        pruning.close()
    binary = {n: s.scores.detach() > 0.5 for n, s in masks.items()}
    kept = sum(int(b.sum()) for b in binary.values())
    if kept != cfg.budget:  # check_schedule guarantees a last choice at the budget
        raise RelucutError(f"ReLUPruner's stage 1 ended with {kept:,} ReLUs, not the budget {cfg.budget:,}")
    freeze_all(masks, binary)
    if cfg.finetune_epochs:
        _finetune(model, teacher, data, base, cfg, workdir / "finetune", progress)
    choices = pruning.choices
    return ReLUPrunerResult(model, final["epochs"], target_epoch(cfg) - 1, len(choices),
                            choices[-1]["step"] if choices else -1, choices)


def _finetune(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig,
              cfg, run_dir: Path, progress: bool) -> None:
    """Stage 2: masks fixed; the engine's CE + KD plus their attention term on stages 2.. outputs."""
    paths = stage_paths(model)[1:] if cfg.feature_weight > 0 else []
    student_tap, teacher_tap = ActivationTap(model, paths), ActivationTap(teacher, paths)

    def extra(ctx: LossContext) -> dict[str, torch.Tensor]:
        s_maps, t_maps = student_tap.take(), [m.detach() for m in teacher_tap.take()]
        return {"feature_loss": cfg.feature_weight * attention_transfer(s_maps, t_maps).to(ctx.logits.device)}

    stage = stage_config(base, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, schedule="step",
                         milestones=cfg.milestones(), weight_decay=cfg.weight_decay, kd_weight=cfg.kd_weight,
                         kd_temperature=cfg.kd_temperature)
    try:
        train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress,
              extra_loss=extra if paths else None, label="ReLUPruner fine-tune")
    finally:
        student_tap.close()
        teacher_tap.close()


__all__ = ["ReLUPrunerResult", "TaylorPruning", "check_run", "check_schedule",
           "relupruner", "target_epoch"]

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError, refuse_unknown_fields
from relucut.finegrained.budget import check_budget
from relucut.finegrained.common import freeze_all, frozen_copy, stage_config, stage_paths
from relucut.finegrained.losses import ActivationTap, attention_transfer
from relucut.finegrained.mask_site import install_mask_sites
from relucut.finegrained.relupruner_importance import TaylorPruning, check_schedule, target_epoch
from relucut.sites import find_sites
from relucut.train.batches import DeviceBatches
from relucut.train.config import TrainConfig
from relucut.train.hooks import LossContext
from relucut.train.loop import seed_everything, train

# their fine-tuning decays at 150/180/210 of 240 epochs (env l. 28, 49), scaled to other lengths
AUTHORS_FINETUNE = (240, (150, 180, 210))


@dataclass
class ReLUPrunerConfig:
    """One ReLUPruner run: the authors' recipe, except that the student starts from the all-ReLU
    base (``from_scratch=False``; ``ReLUPrunerConfig.authors(budget)`` trains it from scratch)."""

    budget: int
    prune_epochs: int = 150  # stage 1: masks re-chosen while training (env l. 38)
    lr: float = 0.05  # stage 1 SGD lr, constant (env l. 40; its decays at 150/180/210, l. 28, come after)
    weight_decay: float = 5e-4  # both stages (env l. 27); momentum: the base config's (theirs 0.9, l. 26)
    kd_weight: float = 0.5  # both stages: 0.5 CE + 0.5 KD (env l. 41-42 and 52-53, GAMMA and ALPHA)
    kd_temperature: float = 4.0  # (env l. 30)
    warmup_epochs: int = 5  # all ReLUs kept while the epoch, counted from 1, is below this (env l. 43)
    target_at: float = 0.6  # the budget is reached in epoch int(W + (E - W) * this), from 1 (env l. 44)
    update_every: int = 100  # steps between mask choices; twice as many at the budget (env l. 45)
    history: int = 10  # steps over which the frequency of x < 0 is averaged (train_pruner.py main())
    score_decay: float = 0.95  # EMA of the position scores (train_pruner.py main())
    fisher_decay: float = 0.99  # EMA of (dL/dy)^2 in the second-order term (importance.py l. 96)
    layer_decay: float = 0.95  # EMAs of each site's gradient statistics (train_pruner.py main())
    depth_bias: float = 0.2  # site weight x (1 + this * depth / (sites - 1)) (train_pruner.py main())
    second_order: bool = True  # add 1/2 x^2 EMA((dL/dy)^2) to the first-order term (train_pruner.py main())
    layer_weighting: bool = True  # scale each site's scores by its gradient statistics (train_pruner.py)
    finetune_epochs: int = 240  # stage 2, masks fixed (env l. 49)
    finetune_lr: float = 0.01  # (env l. 51)
    finetune_milestones: list[int] | None = None  # lr x0.1 at; None: 150/180/210 of 240 scaled (env l. 28)
    feature_weight: float = 1000.0  # attention transfer on the stage 2.. outputs (env l. 54, BETA)
    from_scratch: bool = False  # re-initialize the student first (theirs: env l. 46, INIT_FROM_TEACHER=0)
    linear_stem: bool = False  # stem ReLUs become identities (their ResNet has none: models/resnet.py l. 114)

    @classmethod
    def authors(cls, budget: int, **changes) -> ReLUPrunerConfig:
        """Their recipe as their configs run it: the student trained from scratch."""
        return cls(**{"budget": budget, "from_scratch": True, **changes})

    def check(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RelucutError(message)

        need(self.budget > 0, f"the ReLU budget must be > 0, got {self.budget}; pass --budget 25k or similar")
        need(self.prune_epochs >= 1, f"prune_epochs must be >= 1, got {self.prune_epochs}")
        need(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        need(self.lr > 0 and self.finetune_lr > 0, "lr and finetune_lr must be > 0")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0.0 <= self.kd_weight <= 1.0, f"kd_weight must be in [0, 1], got {self.kd_weight}")
        need(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")
        need(0 <= self.warmup_epochs < self.prune_epochs,
             f"warmup_epochs must be below prune_epochs ({self.prune_epochs}), got {self.warmup_epochs}: "
             "the keep schedule would never reach the budget")
        need(0.0 <= self.target_at <= 1.0,
             f"target_at must be in [0, 1] (a fraction of the epochs after warm-up), got {self.target_at}")
        need(self.update_every >= 1, f"update_every must be >= 1 step, got {self.update_every}")
        need(self.history >= 1, f"history must be >= 1 step, got {self.history}")
        for name in ("score_decay", "fisher_decay", "layer_decay"):
            need(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        need(self.depth_bias >= 0, f"depth_bias must be >= 0, got {self.depth_bias}")
        need(self.feature_weight >= 0, f"feature_weight must be >= 0, got {self.feature_weight}")
        need(all(0 < m for m in self.finetune_milestones or ()), "finetune_milestones must be epochs > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ReLUPrunerConfig:
        refuse_unknown_fields(cls, data, "ReLUPruner config")
        return cls(**data)

    def milestones(self) -> list[int]:
        if self.finetune_milestones is not None:
            return list(self.finetune_milestones)
        length, decays = AUTHORS_FINETUNE
        return sorted({m * self.finetune_epochs // length for m in decays} - {0})


def check_run(cfg: ReLUPrunerConfig, base: TrainConfig, data: DataSplits) -> None:
    """Every check before training: the config's, the budget against ``base``'s network, and whether
    the keep schedule chooses masks at the budget with ``data`` at ``base``'s batch size. Cheap (it
    builds the network untrained): call it before claiming an output folder."""
    cfg.check()
    spec = base.spec()
    sites = find_sites(spec.build(), spec.input_size)
    stem = [s for s in sites if s.stage == "stem"] if cfg.linear_stem else []
    if cfg.linear_stem and not stem:
        raise RelucutError("linear_stem: this model has no stem ReLU; leave the option off")
    check_budget(cfg.budget, sum(s.numel for s in sites) - sum(s.numel for s in stem))
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's ranks, before the engine joins them
    check_schedule(cfg, steps_per_epoch(base, data, world))


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
               cfg: ReLUPrunerConfig, workdir: Path, progress: bool = True) -> ReLUPrunerResult:
    """Runs both stages on ``model`` in place (it ends with frozen pixel masks of exactly
    ``cfg.budget`` ReLUs). ``base`` is the engine config the stages derive from (dataset, split,
    seed, batch size, device). Each stage resumes from its run directory under ``workdir``."""
    check_run(cfg, base, data)
    teacher = frozen_copy(teacher)  # the engine freezes the teacher it is given: not the caller's
    workdir = Path(workdir)
    if cfg.from_scratch:
        seed_everything(base.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    sites, masks = install_mask_sites(model, base.spec().input_size, "pixel", init=1.0)
    for name in [s.name for s in sites if s.stage == "stem"] if cfg.linear_stem else []:
        site = masks.pop(name)  # an identity, out of the pool the budget is chosen from
        site.freeze(torch.zeros_like(site.scores, dtype=torch.bool))
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
              cfg: ReLUPrunerConfig, run_dir: Path, progress: bool) -> None:
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


__all__ = ["ReLUPrunerConfig", "ReLUPrunerResult", "TaylorPruning", "check_run", "check_schedule",
           "keep_fraction", "relupruner", "target_epoch"]

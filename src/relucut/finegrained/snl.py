"""SNL-style mask search (Cho et al., 2022): relaxed masks, an adaptive L1 penalty, top-k.

1. Every ReLU becomes ``m * relu(x) + (1 - m) * x`` with mask scores m (the paper's alpha), per
   pixel or per channel, starting at 1 and kept in [0, 1].
2. The loss adds ``coef * mean ReLU-weighted |m|``; every ``check_every`` steps, if the count of
   entries above 0.01 fell by less than ``min_drop`` (relative), coef is multiplied by ``growth``.
3. Search stops once the count is at or below the budget (or after ``search_epochs``).
4. Masks are binarized by a global top-k to the budget (ties, e.g. the many scores clamped to 0,
   go to the ReLUs that change their input most) and frozen; the net is fine-tuned with KD.

Both stages are runs of the training engine (``search/`` and ``finetune/`` under the workdir).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.finegrained.budget import binarize_to_budget, check_budget
from relucut.finegrained.common import freeze_all, frozen_copy, relu_effect, stage_config, total_relus
from relucut.finegrained.mask_site import GRANULARITIES, LearnableMaskSite, install_mask_sites, mask_parameters
from relucut.train.config import TrainConfig
from relucut.train.loop import train


@dataclass
class SNLConfig:
    budget: int
    granularity: str = "pixel"
    search_epochs: int = 10  # at most; the search ends when the budget is reached
    lr: float = 0.01  # SGD on the weights, search and fine-tune
    mask_lr: float = 0.01  # Adam on the mask scores
    l1_init: float = 0.1
    l1_growth: float = 1.5
    min_drop: float = 0.02
    check_every: int = 20  # steps
    finetune_epochs: int = 10
    milestones: list[int] = field(default_factory=list)  # fine-tuning LR decays
    kd_weight: float = 0.9
    kd_temperature: float = 4.0

    def check(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise RelucutError(message)

        need(self.granularity in GRANULARITIES, f"unknown granularity '{self.granularity}'; use pixel or channel")
        need(self.search_epochs >= 1, f"search_epochs must be >= 1 (the search must run), got {self.search_epochs}")
        need(self.finetune_epochs >= 0, f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        need(self.lr > 0 and self.mask_lr > 0, "lr and mask_lr must be > 0")
        need(self.l1_init > 0, f"the L1 coefficient must be > 0, got {self.l1_init}")
        need(self.l1_growth >= 1, f"l1_growth must be >= 1, got {self.l1_growth}")
        need(self.check_every >= 1, f"check_every must be >= 1 step, got {self.check_every}")
        need(0.0 <= self.kd_weight <= 1.0, f"kd_weight must be in [0, 1], got {self.kd_weight}")
        need(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SNLResult:
    model: nn.Module
    search_epochs_run: int
    relaxed_relus_at_stop: int
    l1_final: float
    history: list[dict]


class L1Controller:
    """SNL's adaptive L1 penalty as engine hooks: ``penalty`` is the extra loss, ``after_step``
    clamps the masks, counts the ReLUs, grows the coefficient and stops at the budget."""

    def __init__(self, masks: dict[str, LearnableMaskSite], cfg: SNLConfig):
        self.masks, self.cfg = masks, cfg
        self.full = sum(math.prod(m.shape) for m in masks.values())
        self.state = {"coef": cfg.l1_init, "last": self.full, "step": 0, "history": []}

    def penalty(self, _ctx) -> torch.Tensor:
        weighted = sum(m.scores.abs().sum() * m.unit_relus for m in self.masks.values())
        return self.state["coef"] * weighted / self.full

    def after_step(self, _step: int, _model: nn.Module) -> bool:
        with torch.no_grad():
            for m in self.masks.values():
                m.scores.clamp_(0.0, 1.0)
        state = self.state
        state["step"] += 1
        now = total_relus(self.masks)
        if now <= self.cfg.budget:
            return True
        if state["step"] % self.cfg.check_every == 0:
            if now > state["last"] * (1 - self.cfg.min_drop):  # the count stopped falling: push harder
                state["coef"] *= self.cfg.l1_growth
            state["history"].append({"step": state["step"], "relus": now, "coef": state["coef"]})
            state["last"] = now
        return False

    def state_dict(self) -> dict:
        return {**self.state, "history": list(self.state["history"])}

    def load_state_dict(self, saved: dict) -> None:
        self.state = {**saved, "history": list(saved["history"])}


def snl(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg: SNLConfig,
        workdir: Path, progress: bool = True) -> SNLResult:
    """Runs the search and fine-tuning on ``model`` in place (it ends with frozen masks).

    ``base`` is the engine config the stages derive from (dataset, split, seed, batch size,
    device). Each stage resumes from its run directory under ``workdir`` after a kill.
    """
    cfg.check()
    teacher = frozen_copy(teacher)  # the engine freezes the teacher it is given: not the caller's
    result = snl_search(model, teacher, data, base, cfg, Path(workdir) / "search", progress)
    snl_finetune(model, teacher, data, base, cfg, Path(workdir) / "finetune", progress)
    return result


def snl_search(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg: SNLConfig,
               run_dir: Path, progress: bool = True) -> SNLResult:
    """Installs relaxed masks, searches down to the budget, binarizes to it and freezes."""
    input_size = base.spec().input_size
    sites, masks = install_mask_sites(model, input_size, cfg.granularity, init=1.0)
    check_budget(cfg.budget, sum(s.numel for s in sites))
    controller = L1Controller(masks, cfg)
    stage = stage_config(base, epochs=cfg.search_epochs, lr=cfg.lr, schedule="constant", select="last",
                         kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
    final = train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress,
                  extra_loss=controller.penalty, callbacks=[controller], label="SNL search",
                  extra_optimizers=[lambda _m: torch.optim.Adam(mask_parameters(masks), lr=cfg.mask_lr)])
    relaxed = total_relus(masks)
    freeze_all(masks, binarize_to_budget(masks, cfg.budget, tiebreak=relu_effect(model, masks, data)))
    return SNLResult(model, final["epochs"], relaxed, controller.state["coef"], controller.state["history"])


def snl_finetune(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg: SNLConfig,
                 run_dir: Path, progress: bool = True) -> None:
    """KD fine-tuning with the masks frozen (only weights train); the best epoch on validation."""
    if not cfg.finetune_epochs:
        return
    stage = stage_config(base, epochs=cfg.finetune_epochs, lr=cfg.lr, schedule="step",
                         milestones=list(cfg.milestones), kd_weight=cfg.kd_weight,
                         kd_temperature=cfg.kd_temperature)
    train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress, label="SNL fine-tune")

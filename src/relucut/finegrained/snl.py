"""SNL-style mask search (Cho et al., 2022): relaxed masks, an adaptive L1 penalty, then binary masks.

1. Every ReLU becomes ``m * relu(x) + (1 - m) * x`` with mask scores m (the paper's alpha), per
   pixel or per channel, starting at 1.
2. The loss adds an L1 penalty on the scores whose coefficient grows while the ReLU count (scores
   above 0.01) stops falling; the search stops once the count is at or below the budget.
3. Masks are binarized and frozen; the net is fine-tuned with KD.

Two recipes share this code (``SNLConfig()`` and ``SNLConfig.authors()``, ``relucut.methods.snl``).
relucut's (the default) clamps the scores to [0, 1], uses a ReLU-count-normalized penalty grown
every ``check_every`` steps, and binarizes by a global top-k to exactly the budget (ties, e.g.
the many scores clamped to 0, go to the ReLUs that change their input most). The authors'
(their public repository) trains weights and masks with Adam 1e-3, no weight decay, CE + KD,
penalty 1e-5 * sum|alpha| grown x1.1 after each epoch without a new low count (from epoch 5),
thresholds the scores at 0.01, and fine-tunes with SGD 1e-3, cosine, KD.

Both stages are runs of the training engine (``search/`` and ``finetune/`` under the workdir).
``cfg`` is a ``relucut.methods.snl.SNLConfig`` (the registry sits above the algorithms, so it
is not imported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.finegrained.budget import binarize_to_budget, check_budget
from relucut.finegrained.common import drop_stem_relus, freeze_all, frozen_copy, relu_effect, stage_config, total_relus
from relucut.finegrained.mask_site import LearnableMaskSite, install_mask_sites, mask_parameters
from relucut.train.config import TrainConfig
from relucut.train.loop import train



@dataclass
class SNLResult:
    model: nn.Module
    search_epochs_run: int
    relaxed_relus_at_stop: int
    l1_final: float
    history: list[dict]
    forced_topk: bool = False  # threshold binarization was over the budget: top-k to it instead


class L1Controller:
    """SNL's adaptive L1 penalty as engine hooks: ``penalty`` is the extra loss; ``after_step``
    (clamps and) counts the ReLUs, grows the coefficient and stops at the budget (``l1_rule``
    "steps"), or ``on_epoch_end`` does so once an epoch ("epochs", the authors' rule)."""

    def __init__(self, masks: dict[str, LearnableMaskSite], cfg):
        self.masks, self.cfg = masks, cfg
        self.full = sum(math.prod(m.shape) for m in masks.values())
        self.state = {"coef": cfg.l1_init, "last": self.full, "lowest": self.full, "step": 0, "history": []}

    def penalty(self, _ctx) -> torch.Tensor:
        weighted = sum(m.scores.abs().sum() * m.unit_relus for m in self.masks.values())
        return self.state["coef"] * (weighted / self.full if self.cfg.l1_per_relu else weighted)

    def after_step(self, _step: int, _model: nn.Module) -> bool:
        if self.cfg.clamp:
            with torch.no_grad():
                for m in self.masks.values():
                    m.scores.clamp_(0.0, 1.0)
        state = self.state
        state["step"] += 1
        if self.cfg.l1_rule != "steps":
            return False
        now = total_relus(self.masks)
        if now <= self.cfg.budget:
            return True
        if state["step"] % self.cfg.check_every == 0:
            if now > state["last"] * (1 - self.cfg.min_drop):  # the count stopped falling: push harder
                state["coef"] *= self.cfg.l1_growth
            state["history"].append({"step": state["step"], "relus": now, "coef": state["coef"]})
            state["last"] = now
        return False

    def on_epoch_end(self, epoch: int, _model: nn.Module, metrics: dict) -> None:
        if self.cfg.l1_rule != "epochs":
            return
        state, now = self.state, total_relus(self.masks)
        if now < state["lowest"]:
            state["lowest"] = now
        elif epoch >= self.cfg.l1_grace_epochs:
            state["coef"] *= self.cfg.l1_growth
        state["history"].append({"epoch": epoch, "step": state["step"], "relus": now, "coef": state["coef"]})
        metrics["relus"] = now
        if now <= self.cfg.budget:
            metrics["stopped"] = True  # the engine ends the run after this epoch

    def state_dict(self) -> dict:
        return {**self.state, "history": list(self.state["history"])}

    def load_state_dict(self, saved: dict) -> None:
        self.state = {"lowest": saved.get("last", self.full), **saved, "history": list(saved["history"])}


def snl(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg,
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


def snl_search(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg,
               run_dir: Path, progress: bool = True) -> SNLResult:
    """Installs relaxed masks, searches down to the budget, binarizes to it and freezes."""
    input_size = base.spec().input_size
    sites, masks = install_mask_sites(model, input_size, cfg.granularity, init=1.0, linearize=cfg.linearize)
    masks = drop_stem_relus(sites, masks, cfg.stem_relu)
    check_budget(cfg.budget, sum(math.prod(m.shape) for m in masks.values()))
    controller = L1Controller(masks, cfg)
    weights = {"optimizer": cfg.optimizer}  # the weights' optimizer in the search
    if cfg.weight_decay is not None:
        weights["weight_decay"] = cfg.weight_decay
    stage = stage_config(base, epochs=cfg.search_epochs, lr=cfg.lr, schedule="constant", select="last",
                         kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature, **weights)
    final = train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress,
                  extra_loss=controller.penalty, callbacks=[controller], label="SNL search",
                  extra_optimizers=[lambda _m: torch.optim.Adam(mask_parameters(masks), lr=cfg.mask_lr)])
    relaxed = total_relus(masks)
    binary = None if cfg.binarize == "threshold" and relaxed <= cfg.budget else binarize_to_budget(
        masks, cfg.budget, tiebreak=relu_effect(model, masks, data))
    freeze_all(masks, binary)  # None: each site's scores above the threshold
    return SNLResult(model, final["epochs"], relaxed, controller.state["coef"], controller.state["history"],
                     forced_topk=cfg.binarize == "threshold" and binary is not None)


def snl_finetune(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg,
                 run_dir: Path, progress: bool = True) -> None:
    """KD fine-tuning with the masks frozen (only weights train); the best epoch on validation."""
    if not cfg.finetune_epochs:
        return
    changes = {"milestones": list(cfg.milestones)} if cfg.finetune_schedule == "step" else {}
    if cfg.finetune_weight_decay is not None:
        changes["weight_decay"] = cfg.finetune_weight_decay
    stage = stage_config(base, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr or cfg.lr,
                         schedule=cfg.finetune_schedule, kd_weight=cfg.kd_weight,
                         kd_temperature=cfg.kd_temperature, **changes)
    train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress, label="SNL fine-tune")

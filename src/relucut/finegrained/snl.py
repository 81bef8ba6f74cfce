"""SNL-style mask search (Cho et al., 2022): relaxed masks, an adaptive L1 penalty, top-k.

1. Every ReLU becomes ``alpha * relu(x) + (1 - alpha) * x`` with alpha (per pixel or per
   channel) starting at 1 and kept in [0, 1].
2. The loss adds ``coef * mean ReLU-weighted alpha``; every ``check_every`` steps, if the count of
   entries above 0.01 fell by less than ``min_drop`` (relative), coef is multiplied by ``growth``.
3. Search stops once the count is at or below the budget (or after ``search_epochs``).
4. Masks are binarized by a global top-k to the budget and frozen; the net is fine-tuned with KD.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.finegrained.budget import binarize_to_budget, check_budget
from relucut.finegrained.common import KDLoss, freeze_all, restore_frozen, save_frozen, total_relus
from relucut.finegrained.loop import Data, EpochHooks, run_epochs
from relucut.finegrained.losses import LossWeights
from relucut.finegrained.mask_site import install_mask_sites, mask_parameters
from relucut.train.loop import seed_everything


@dataclass
class SNLConfig:
    budget: int
    granularity: str = "pixel"
    search_epochs: int = 10  # at most; the search ends when the budget is reached
    lr: float = 0.01  # weights, search and fine-tune
    mask_lr: float = 0.01  # Adam on the mask scores
    l1_init: float = 0.1
    l1_growth: float = 1.5
    min_drop: float = 0.02
    check_every: int = 20  # steps
    finetune_epochs: int = 10
    milestones: list[int] = field(default_factory=list)  # fine-tuning LR decays
    batch_size: int = 128
    lam: float = 0.9
    rho: float = 4.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SNLResult:
    model: nn.Module
    search_epochs_run: int
    relaxed_relus_at_stop: int
    l1_final: float
    history: list[dict]


def frozen_copy(teacher: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def snl(model: nn.Module, teacher: nn.Module, data: Data, input_size: tuple[int, ...], cfg: SNLConfig,
        progress: bool = True, workdir: Path | None = None) -> SNLResult:
    """Runs the search and fine-tuning on ``model`` in place (it ends with frozen masks).

    With ``workdir`` every search epoch, the searched masks and every fine-tuning epoch are saved
    there, and a rerun after a kill continues from them.
    """
    teacher = frozen_copy(teacher)
    cache = workdir / "snl_search.pt" if workdir else None
    if cache is not None and cache.is_file():
        saved = torch.load(cache, map_location="cpu")
        restore_frozen(model, input_size, cfg.granularity, saved)
        result = SNLResult(model, **saved["result"])
    else:
        result = snl_search(model, teacher, data, input_size, cfg, progress,
                            checkpoint=workdir / "snl_search_progress.pt" if workdir else None)
        if cache is not None:
            save_frozen(cache, model, {"result": {k: v for k, v in vars(result).items() if k != "model"}})
    snl_finetune(model, teacher, data, cfg, progress, checkpoint=workdir / "snl_finetune.pt" if workdir else None)
    return result


def snl_finetune(model: nn.Module, teacher: nn.Module, data: Data, cfg: SNLConfig, progress: bool = True,
                 checkpoint: Path | None = None) -> None:
    """KD fine-tuning with the masks frozen (only weights train)."""
    if cfg.finetune_epochs:
        weights = LossWeights(lam=cfg.lam, beta=0.0, rho=cfg.rho)
        run_epochs(model, data, KDLoss(model, teacher, weights), epochs=cfg.finetune_epochs, lr=cfg.lr,
                   milestones=cfg.milestones, batch_size=cfg.batch_size, seed=cfg.seed + 1,
                   label="SNL fine-tune", progress=progress, checkpoint=checkpoint)


def snl_search(model: nn.Module, teacher: nn.Module, data: Data, input_size: tuple[int, ...], cfg: SNLConfig,
               progress: bool = True, checkpoint: Path | None = None) -> SNLResult:
    """Installs relaxed masks, searches down to the budget, binarizes to it and freezes.

    With ``checkpoint`` the search state (weights, masks, optimizers, L1 controller, RNGs) is
    saved every epoch and a rerun resumes from the last one.
    """
    seed_everything(cfg.seed)
    sites, masks = install_mask_sites(model, input_size, cfg.granularity, init=1.0)
    check_budget(cfg.budget, sum(s.numel for s in sites))
    full = sum(s.numel for s in sites)
    weights = LossWeights(lam=cfg.lam, beta=0.0, rho=cfg.rho)
    state = {"coef": cfg.l1_init, "last": full, "step": 0}
    history: list[dict] = []

    def l1(_x, _y):
        penalty = sum(m.alpha.abs().sum() * m.unit_relus for m in masks.values()) / full
        return state["coef"] * penalty

    def after_step() -> bool:
        with torch.no_grad():
            for m in masks.values():
                m.alpha.clamp_(0.0, 1.0)
        state["step"] += 1
        now = total_relus(masks)
        if now <= cfg.budget:
            return True
        if state["step"] % cfg.check_every == 0:
            if now > state["last"] * (1 - cfg.min_drop):  # the count stopped falling: push harder
                state["coef"] *= cfg.l1_growth
            history.append({"step": state["step"], "relus": now, "coef": state["coef"]})
            state["last"] = now
        return False

    def controller_state() -> dict:
        return {**state, "history": list(history)}

    def load_controller_state(saved: dict) -> None:
        state.update({k: saved[k] for k in state})
        history[:] = saved["history"]

    search_loss = KDLoss(model, teacher, weights, extra=l1)
    mask_opt = torch.optim.Adam(mask_parameters(masks), lr=cfg.mask_lr)
    epochs_run = run_epochs(
        model, data, search_loss, epochs=cfg.search_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
        extra_optimizer=mask_opt, seed=cfg.seed, label="SNL search", progress=progress, checkpoint=checkpoint,
        hooks=EpochHooks(after_step=after_step, state_dict=controller_state, load_state_dict=load_controller_state),
    )
    relaxed = total_relus(masks)
    freeze_all(masks, binarize_to_budget(masks, cfg.budget))
    return SNLResult(model, epochs_run, relaxed, state["coef"], history)

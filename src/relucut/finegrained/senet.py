"""SENet's three stages (Kundu et al., 2023), with the shallow paper's stage 3 as an option.

Stage 1: per-layer ReLU budgets from pruning sensitivity (``sensitivity.layer_budgets``): one-shot
magnitude pruning of the base, or (``sensitivity="sparse-training"``) a short sparse training run.
Stage 2: pixel masks learned with each layer's top-k fixed to its budget (straight-through), KD;
or, with ``mask_learning="distance"``, chosen once an epoch where student and teacher differ most.
Stage 3: masks frozen, fine-tuning with eq. 2 (KD + CE + a feature-map term, attention transfer
by default). With ``shallow``, a block whose inner ReLU's sensitivity (fraction of its ReLUs kept)
is below ``dth`` loses it, as in the paper: a gated conv-BN branch replaces its
conv-BN-ReLU-conv-BN (shortcut and post-add ReLU kept); with ``gb_drops="inner+post-add"`` a
post-add ReLU below ``dth`` also goes, by fading to the identity; gates ramp to 1 by the first
LR decay and main branches go at the end; with
``aux_after`` an auxiliary classifier is trained by KD from the all-ReLU teacher.

Stages 2 and 3 are runs of the training engine (``masks/`` and ``finetune/`` under the workdir).
``cfg`` is a ``relucut.methods.senet.SENetConfig`` (the registry sits above the algorithms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.data.splits import DataSplits
from relucut.errors import RelucutError
from relucut.finegrained.aux import AuxHead, AuxTap, make_aux_head
from relucut.finegrained.budget import check_budget, check_layer_budgets
from relucut.finegrained.common import (
    FeatureLoss,
    drop_stem_relus,
    freeze_all,
    frozen_copy,
    relu_effect,
    stage_config,
)
from relucut.finegrained.distance_masks import DistanceMasks
from relucut.finegrained.gated import (
    below_threshold,
    block_sensitivity,
    gate_value,
    install_gates,
    layer_sensitivity,
    remove_main_branches,
    set_gates,
)
from relucut.finegrained.losses import LossWeights, combined_loss
from relucut.finegrained.mask_site import install_mask_sites, mask_parameters
from relucut.finegrained.sensitivity import layer_budgets, relu_sensitivity
from relucut.finegrained.sparse_probe import sparse_training_keep_fractions
from relucut.sites import find_sites
from relucut.train.config import TrainConfig
from relucut.train.hooks import LossContext
from relucut.train.loop import seed_everything, train



@dataclass
class SENetResult:
    model: nn.Module
    layer_budget: dict[str, int]
    sensitivity: dict[str, float]
    block_sensitivity: dict[str, float]
    shallow_blocks: list[str]  # blocks whose inner ReLU was below d_th: now conv-BN + shortcut
    aux_head: AuxHead | None
    faded_sites: list[str] = field(default_factory=list)  # post-add ReLU sites below d_th: dropped
    layer_sensitivity: dict[str, float] = field(default_factory=dict)  # site -> fraction of ReLUs kept


class GateRamp:
    """Engine callback: gamma of every gated block follows the epoch (so a resumed run replays it)."""

    def __init__(self, gates: dict[str, nn.Module], ramp_epochs: int, schedule: str):
        self.gates, self.ramp, self.schedule = gates, ramp_epochs, schedule

    def on_epoch_start(self, epoch: int, _model: nn.Module) -> None:
        set_gates(self.gates, gate_value(epoch, self.ramp, self.schedule))


def _block_sites(sites) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sites:
        if s.stage != "stem":  # the stem ReLU stays out of gated branching
            out.setdefault(s.block, []).append(s.name)
    return out


def _given_budget(given: dict[str, int], sites, relu_sites) -> dict[str, int]:
    """A caller's allocation without the sites ``stem_relu="drop"`` removed (they must get 0 there)."""
    dropped = {s.name for s in sites} - {s.name for s in relu_sites}
    nonzero = sorted(n for n in dropped if int(given.get(n, 0)) != 0)
    if nonzero:
        raise RelucutError(f"layer_budget gives ReLUs to {', '.join(nonzero)}, which stem_relu='drop' "
                           "removes; give them 0 or keep the stem ReLU")
    return {n: k for n, k in given.items() if n not in dropped}


def senet(model: nn.Module, teacher: nn.Module, data: DataSplits, base: TrainConfig, cfg,
          workdir: Path, progress: bool = True,
          after_stage2: Callable[[nn.Module], None] | None = None) -> SENetResult:
    """Runs the three stages on ``model`` in place; ``model`` should hold trained all-ReLU weights.

    ``base`` is the engine config the stages derive from. ``after_stage2(model)`` is called once
    the masks are frozen, before fine-tuning. Each stage resumes from its run directory under
    ``workdir`` after a kill.
    """
    cfg.check()
    teacher = frozen_copy(teacher)  # the engine freezes the teacher it is given: not the caller's
    workdir = Path(workdir)
    input_size = base.spec().input_size
    sites = find_sites(model, input_size)
    # the sites the budget fills
    relu_sites = [s for s in sites if cfg.stem_relu == "keep" or s.stage != "stem"]
    check_budget(cfg.budget, sum(s.numel for s in relu_sites))
    # stage 1: one-shot pruning is deterministic from the base weights (a rerun recomputes it);
    # the sparse-training probe is a resumable engine run of its own
    kept = None
    if cfg.sensitivity == "sparse-training" and cfg.layer_budget is None:  # a given allocation needs no probe
        probe = stage_config(base, epochs=cfg.sensitivity_epochs, lr=cfg.lr, schedule="constant", select="last",
                             kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
        kept = sparse_training_keep_fractions(model, teacher, data, probe, cfg.density, workdir / "sensitivity",
                                              progress)
    sensitivity = relu_sensitivity(model, cfg.density, kept)
    if cfg.layer_budget is None:
        budget = layer_budgets(relu_sites, sensitivity, cfg.budget, cfg.allocation)
    else:
        given = _given_budget(cfg.layer_budget, sites, relu_sites)
        budget = check_layer_budgets(relu_sites, given, cfg.budget)
    budget = {s.name: budget.get(s.name, 0) for s in sites}  # a dropped stem ReLU: 0
    # stage 2
    _, masks = install_mask_sites(model, input_size, "pixel", linearize=cfg.linearize)
    masks = drop_stem_relus(sites, masks, cfg.stem_relu)
    with torch.no_grad():
        for name, effect in relu_effect(model, masks, data).items():  # start where ReLUs matter most
            masks[name].scores.copy_(effect / effect.max().clamp_min(1e-12))
    for name, site in masks.items():
        site.use_topk(budget[name])
    if cfg.mask_epochs:
        stage = stage_config(base, epochs=cfg.mask_epochs, lr=cfg.lr, schedule="constant", select="last",
                             kd_weight=cfg.kd_weight, kd_temperature=cfg.kd_temperature)
        if cfg.mask_learning == "distance":
            learner = DistanceMasks(model, teacher, masks)
            try:
                train(stage, workdir / "masks", model=model, teacher=teacher, data=data, progress=progress,
                      label="SENet masks", callbacks=[learner])
            finally:
                learner.close()
        else:
            train(stage, workdir / "masks", model=model, teacher=teacher, data=data, progress=progress,
                  label="SENet masks",
                  extra_optimizers=[lambda _m: torch.optim.Adam(mask_parameters(masks), lr=cfg.mask_lr)])
    freeze_all(masks)
    if after_stage2 is not None:
        after_stage2(model)
    # stage 3
    sizes = {s.name: s.numel for s in sites}
    block_sens = block_sensitivity(_block_sites(sites), budget, sizes)
    layer_sens = layer_sensitivity(budget, sizes)
    seed_everything(base.seed)  # the new branches and heads start alike in a resumed run
    gates: dict[str, nn.Module] = {}
    shallow_blocks: list[str] = []
    fading: list[str] = []
    if cfg.shallow:
        shallow_blocks, fading = below_threshold(sites, layer_sens, cfg.dth, model, cfg.gb_drops)
        gates = install_gates(model, shallow_blocks, fading)
    aux_head = make_aux_head(model, cfg.aux_after, input_size, base.spec().num_classes) if cfg.aux_after else None
    if cfg.finetune_epochs:
        _finetune(model, teacher, data, base, cfg, gates, aux_head, workdir / "finetune", progress)
    set_gates(gates, 1.0)  # also when fine-tuning ended before the ramp did
    remove_main_branches(model, gates)
    faded_sites = [s.name for s in sites if s.module_path in set(fading)]
    return SENetResult(model, budget, sensitivity, block_sens, shallow_blocks, aux_head, faded_sites, layer_sens)


def _finetune(model, teacher, data, base, cfg, gates, aux_head, run_dir: Path, progress: bool) -> None:
    """Stage 3 on the engine: KD + CE (the engine's) + the feature term (+ auxiliary KD)."""
    features = FeatureLoss(model, teacher, cfg.weights) if cfg.feature_weight > 0 else None
    tap = None
    if aux_head is not None:
        model.add_module("aux_head", aux_head)  # trained and checkpointed with the model
        tap = AuxTap(model, aux_head, cfg.aux_after)
    aux_weights = LossWeights(cfg.kd_weight, 0.0, cfg.kd_temperature)

    def extra(ctx: LossContext) -> dict[str, torch.Tensor]:
        terms = {}
        if features is not None:
            terms["feature_loss"] = features(ctx)
        if tap is not None:
            terms["aux_loss"] = combined_loss(tap.logits, ctx.teacher_logits, ctx.targets, weights=aux_weights)
        return terms or {"zero": ctx.logits.new_zeros(())}

    ramp = min(cfg.milestones[0], cfg.finetune_epochs) if cfg.milestones else cfg.finetune_epochs
    # with gates the network only exists once gamma is 1: keep the last epoch, not an earlier best
    stage = stage_config(base, epochs=cfg.finetune_epochs, lr=cfg.lr, schedule="step",
                         milestones=list(cfg.milestones), kd_weight=cfg.kd_weight,
                         kd_temperature=cfg.kd_temperature, select="last" if gates else "best")
    try:
        train(stage, run_dir, model=model, teacher=teacher, data=data, progress=progress, extra_loss=extra,
              callbacks=[GateRamp(gates, ramp, cfg.gate_schedule)], label="SENet fine-tune")
    finally:
        if features is not None:
            features.close()
        if tap is not None:
            tap.close()
        if aux_head is not None:
            del model.aux_head

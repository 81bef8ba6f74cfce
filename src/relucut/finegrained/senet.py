"""SENet's three stages (Kundu et al., 2023), with the shallow paper's stage 3 as an option.

Stage 1: per-layer ReLU budgets from pruning sensitivity (``sensitivity.layer_budgets``).
Stage 2: pixel masks learned with each layer's top-k fixed to its budget (straight-through), KD.
Stage 3: masks frozen, fine-tuning with eq. 2 (KD + CE + PRAM). With ``shallow``, blocks whose
ReLU sensitivity is below ``dth`` get a gated conv-BN branch whose gate ramps to 1 by the first
LR decay, and lose their main branch at the end; with ``aux_after`` an auxiliary classifier is
trained by KD from the all-ReLU teacher.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from relucut.errors import RelucutError
from relucut.finegrained.aux import AuxHead, AuxTap, make_aux_head
from relucut.finegrained.budget import check_budget
from relucut.finegrained.common import KDLoss, block_paths, freeze_all, restore_frozen, save_frozen
from relucut.finegrained.gated import (
    GatedBranch,
    block_sensitivity,
    gate_value,
    install_gates,
    remove_main_branches,
    set_gates,
)
from relucut.finegrained.loop import Data, EpochHooks, run_epochs, train_batches
from relucut.finegrained.losses import LossWeights, combined_loss
from relucut.finegrained.mask_site import install_mask_sites, mask_parameters
from relucut.finegrained.sensitivity import layer_budgets, relu_sensitivity
from relucut.sites import find_sites
from relucut.train.loop import seed_everything


@dataclass
class SENetConfig:
    budget: int
    density: float = 0.1  # parameter density for the pruning-sensitivity probe
    mask_epochs: int = 5
    mask_lr: float = 0.01
    lr: float = 0.01
    finetune_epochs: int = 180
    milestones: list[int] = field(default_factory=lambda: [90, 140, 160])
    batch_size: int = 128
    lam: float = 0.9
    beta: float = 1000.0
    rho: float = 4.0
    shallow: bool = False
    dth: float = 0.05
    gate_schedule: str = "linear"
    aux_after: str | None = None  # stage after which the auxiliary classifier sits
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SENetResult:
    model: nn.Module
    layer_budget: dict[str, int]
    sensitivity: dict[str, float]
    block_sensitivity: dict[str, float]
    shallow_blocks: list[str]
    aux_head: AuxHead | None


@torch.no_grad()
def relu_effect_scores(model: nn.Module, masks: dict, data: Data, batches: int = 2, batch_size: int = 256
                       ) -> None:
    """Initial mask scores: the mean squared change a ReLU makes at each position (x^2 where x<0).

    Mask learning starts from the positions where the ReLU matters most instead of at random.
    """
    device = next(model.parameters()).device
    sums = {n: torch.zeros_like(m.alpha) for n, m in masks.items()}
    handles = []
    for n, m in masks.items():
        def hook(mod, inputs, _out, n=n):
            x = inputs[0]
            effect = (torch.relu(x) - x).square().mean(0)
            if mod.granularity == "channel":
                effect = effect.mean(dim=tuple(range(1, effect.dim())), keepdim=True)
            sums[n] += effect
        handles.append(m.register_forward_hook(hook))
    gen = torch.Generator().manual_seed(0)
    model.eval()
    try:
        for i, (x, _) in enumerate(train_batches(data, batch_size, gen, device)):
            model(x)
            if i + 1 >= batches:
                break
    finally:
        for h in handles:
            h.remove()
    for n, m in masks.items():
        scale = sums[n].max().clamp_min(1e-12)
        m.alpha.copy_(sums[n] / scale)


def _block_sites(sites) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sites:
        if s.stage != "stem":  # the stem ReLU stays out of gated branching
            out.setdefault(s.block, []).append(s.name)
    return out


def senet(model: nn.Module, teacher: nn.Module, data: Data, input_size: tuple[int, ...], cfg: SENetConfig,
          progress: bool = True, after_stage2: Callable[[nn.Module], None] | None = None,
          workdir: Path | None = None) -> SENetResult:
    """Runs the three stages on ``model`` in place; ``model`` should hold trained all-ReLU weights.

    ``after_stage2(model)`` is called once the masks are frozen, before fine-tuning. With
    ``workdir``, every stage-2 epoch, the stage-2 result and every fine-tuning epoch are saved
    there, and a rerun after a kill continues from them.
    """
    seed_everything(cfg.seed)
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    sites = find_sites(model, input_size)
    check_budget(cfg.budget, sum(s.numel for s in sites))
    if cfg.shallow and not 0.0 < cfg.dth < 1.0:
        raise RelucutError(f"--dth must be in (0, 1) (a ReLU sensitivity), got {cfg.dth}")
    weights = LossWeights(lam=cfg.lam, beta=cfg.beta, rho=cfg.rho)
    pram_paths = block_paths(model)
    cache = workdir / "senet_stage2.pt" if workdir else None
    if cache is not None and cache.is_file():  # stages 1 and 2 finished before a kill
        saved = torch.load(cache, map_location="cpu")
        sensitivity, budget = saved["sensitivity"], saved["layer_budget"]
        restore_frozen(model, input_size, "pixel", saved)
    else:
        # stage 1
        sensitivity = relu_sensitivity(model, cfg.density)
        budget = layer_budgets(sites, sensitivity, cfg.budget)
        # stage 2
        _, masks = install_mask_sites(model, input_size, "pixel")
        relu_effect_scores(model, masks, data)
        for name, site in masks.items():
            site.use_topk(budget[name])
        if cfg.mask_epochs:
            run_epochs(model, data, KDLoss(model, teacher, LossWeights(cfg.lam, 0.0, cfg.rho)),
                       epochs=cfg.mask_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                       extra_optimizer=torch.optim.Adam(mask_parameters(masks), lr=cfg.mask_lr),
                       seed=cfg.seed, label="SENet masks", progress=progress,
                       checkpoint=workdir / "senet_stage2_progress.pt" if workdir else None)
        freeze_all(masks)
        if cache is not None:
            save_frozen(cache, model, {"sensitivity": sensitivity, "layer_budget": budget})
    if after_stage2 is not None:
        after_stage2(model)
    # stage 3
    sizes = {s.name: s.numel for s in sites}
    block_sens = block_sensitivity(_block_sites(sites), budget, sizes)
    shallow_blocks: list[str] = []
    gates: dict[str, GatedBranch] = {}
    if cfg.shallow:
        candidates = set(block_paths(model))
        shallow_blocks = [b for b, d in block_sens.items() if d < cfg.dth and b in candidates]
        gates = install_gates(model, shallow_blocks)
    aux_head = tap = None
    if cfg.aux_after:
        aux_head = make_aux_head(model, cfg.aux_after, input_size, int(_num_classes(model)))
        model.add_module("aux_head", aux_head)  # trained with the model
        tap = AuxTap(model, aux_head, cfg.aux_after)

    def aux_kd(_x, y):
        return combined_loss(tap.logits, loss.last_teacher_logits, y, weights=LossWeights(cfg.lam, 0.0, cfg.rho))

    loss = KDLoss(model, teacher, weights, pram_paths, extra=aux_kd if tap else None)
    ramp = min(cfg.milestones[0], cfg.finetune_epochs) if cfg.milestones else cfg.finetune_epochs
    hooks = EpochHooks(on_epoch_start=lambda e: set_gates(gates, gate_value(e, ramp, cfg.gate_schedule)))
    try:
        if cfg.finetune_epochs:
            run_epochs(model, data, loss, epochs=cfg.finetune_epochs, lr=cfg.lr, milestones=cfg.milestones,
                       batch_size=cfg.batch_size, hooks=hooks, seed=cfg.seed + 1, label="SENet fine-tune",
                       progress=progress, checkpoint=workdir / "senet_finetune.pt" if workdir else None)
    finally:
        loss.close()
        if tap:
            tap.close()
    if aux_head is not None:
        del model.aux_head
    set_gates(gates, 1.0)  # also when fine-tuning ended before the ramp did
    remove_main_branches(model, gates)
    return SENetResult(model, budget, sensitivity, block_sens, shallow_blocks, aux_head)


def _num_classes(model: nn.Module) -> int:
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise RelucutError("the auxiliary classifier needs a model whose classifier is a Linear 'fc'")
    return fc.out_features

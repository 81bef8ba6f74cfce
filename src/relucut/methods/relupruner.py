"""ReLUPruner (Li et al., AAAI 2026): a Taylor importance of every ReLU position, masks re-chosen by
one global top-k while a progressive schedule brings the kept fraction down to the budget as the
network trains with KD, then fine-tuning with the masks fixed (``relucut.finegrained.relupruner``).

The defaults are the authors' code's (github.com/Orange2019220/ReluPruner at e74b70a; "env" is its
``configs/cifar10_resnet18.env``; each setting names its source), except that the student starts
from the all-ReLU base as every relucut method does (``ReLUPrunerConfig.authors`` trains it from
scratch, as their configs do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relucut.methods._config import MethodConfig, need, setting
from relucut.methods._context import method_result
from relucut.methods._registry import register_method
from relucut.methods._linearize import linearize_setting, linearized, linearized_frontier

# their fine-tuning decays at 150/180/210 of 240 epochs (env l. 28, 49), scaled to other lengths
AUTHORS_FINETUNE = (240, (150, 180, 210))


@dataclass
class ReLUPrunerConfig(MethodConfig):
    """One ReLUPruner run: the authors' recipe, the student starting from the all-ReLU base."""

    method = "relupruner"

    budget: int | None = setting(None, help="Global ReLU budget, e.g. 25000 or 25k.")
    prune_epochs: int = setting(150, help="Stage 1: epochs of training while the masks are re-chosen (env l. 38).")
    lr: float = setting(0.05, help="Stage 1 SGD learning rate, constant (env l. 40).")
    weight_decay: float = setting(5e-4, help="Weight decay of both stages (env l. 27).")
    kd_weight: float = setting(0.5, help="KD weight of both stages; CE gets 1 - it (env l. 41-42, 52-53).")
    kd_temperature: float = setting(4.0, help="KD temperature (env l. 30).")
    warmup_epochs: int = setting(5, help="All ReLUs kept while the epoch (from 1) is below this (env l. 43).")
    target_at: float = setting(0.6, help="The budget is reached in epoch int(W + (E - W) x this), from 1 "
                                         "(env l. 44).")
    update_every: int | None = setting(100, help="Steps between mask choices, twice as many at the budget "
                                                 "(env l. 45); unset: four choices an epoch.")
    history: int = setting(10, help="Steps over which the frequency of x < 0 is averaged (train_pruner.py).")
    score_decay: float = setting(0.95, help="EMA decay of the position scores (train_pruner.py).")
    fisher_decay: float = setting(0.99, help="EMA decay of (dL/dy)^2 in the second-order term (importance.py "
                                             "l. 96).")
    layer_decay: float = setting(0.95, help="EMA decay of each site's gradient statistics (train_pruner.py).")
    depth_bias: float = setting(0.2, help="Site weight x (1 + this x depth / (sites - 1)) (train_pruner.py).")
    second_order: bool = setting(True, help="Add 1/2 x^2 EMA((dL/dy)^2) to the first-order term (train_pruner.py).")
    layer_weighting: bool = setting(True, help="Scale each site's scores by its gradient statistics "
                                               "(train_pruner.py).")
    finetune_epochs: int = setting(240, help="Stage 2 epochs, masks fixed (env l. 49).")
    finetune_lr: float = setting(0.01, help="Stage 2 SGD learning rate (env l. 51).")
    finetune_milestones: list[int] | None = setting(None, help="Stage 2 epochs where the learning rate drops "
                                                               "x0.1 (default: 150/180/210 of 240, scaled; env l. 28).")
    feature_weight: float = setting(1000.0, help="Weight of the attention-transfer term on the outputs of stages "
                                                 "2 on (env l. 54, BETA).")
    from_scratch: bool = setting(False, help="Re-initialize the student first (theirs: env l. 46, "
                                             "INIT_FROM_TEACHER=0).")
    linear_stem: bool = setting(False, help="Stem ReLUs become identities (their ResNet has none: models/resnet.py "
                                            "l. 114).")
    linearize: str = linearize_setting()

    @classmethod
    def authors(cls, budget: int | None = None, **changes: Any) -> ReLUPrunerConfig:
        """Their recipe as their configs run it: the student trained from scratch, no stem ReLU."""
        return cls(**{"budget": budget, "from_scratch": True, "linear_stem": True, **changes})

    @classmethod
    def presets(cls) -> dict:
        """``--recipe`` choices: relucut's start (from the all-ReLU base) or the authors' (from scratch)."""
        return {"relucut": cls, "authors": cls.authors}

    @classmethod
    def for_frontier(cls, search_epochs: int, finetune_epochs: int) -> ReLUPrunerConfig:  # noqa: ARG003
        """The frontier's ReLUPruner: pruning and fine-tuning of the masked methods' fine-tuning
        length each, the warm-up at the authors' share (5 of 150), four mask choices an epoch."""
        prune = max(2, finetune_epochs)
        return cls(prune_epochs=prune, warmup_epochs=round(5 * prune / 150), finetune_epochs=finetune_epochs,
                   update_every=None)

    def check(self) -> None:
        super().check()
        need(self.budget is None or self.budget >= 1, f"budget must be >= 1 ReLU, got {self.budget}")
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
        need(self.update_every is None or self.update_every >= 1, f"update_every must be >= 1 step, got "
                                                                  f"{self.update_every}")
        need(self.history >= 1, f"history must be >= 1 step, got {self.history}")
        for name in ("score_decay", "fisher_decay", "layer_decay"):
            need(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1), got {getattr(self, name)}")
        need(self.depth_bias >= 0, f"depth_bias must be >= 0, got {self.depth_bias}")
        need(self.feature_weight >= 0, f"feature_weight must be >= 0, got {self.feature_weight}")
        need(all(0 < m for m in self.finetune_milestones or ()), "finetune_milestones must be epochs > 0")

    def milestones(self) -> list[int]:
        if self.finetune_milestones is not None:
            return list(self.finetune_milestones)
        length, decays = AUTHORS_FINETUNE
        return sorted({m * self.finetune_epochs // length for m in decays} - {0})


@register_method(ReLUPrunerConfig, order=50, variants={"relupruner-poly2": {"linearize": "poly2"}},
                 frontier=linearized_frontier("relupruner"),
                 summary="ReLUPruner: Taylor importance of every ReLU, masks re-chosen by a global top-k on a "
                         "progressive schedule down to the budget while training with KD.")
def run(config: ReLUPrunerConfig, ctx):
    """ReLUPruner from the teacher to exactly ``config.budget`` ReLUs."""
    from relucut.finegrained.artifact import export
    from relucut.finegrained.common import frozen_copy
    from relucut.finegrained.pipeline import accuracy, result_columns, run_in_folder, start_model
    from relucut.finegrained.relupruner import check_run, relupruner

    check_run(config, ctx.base, ctx.data)  # the keep schedule against the data, before the folder is claimed

    def body(out, base, teacher_model, base_cost) -> dict:
        model = start_model(teacher_model)
        res = relupruner(model, frozen_copy(teacher_model), ctx.data, base, config, out, progress=ctx.progress)
        cost = export(out / "export", model, ctx.spec, meta={"method": "relupruner", "budget": config.budget})
        return {"method": "relupruner" + ("+linear-stem" if config.linear_stem else ""), "budget": config.budget,
                "prune_epochs_run": res.prune_epochs_run, "budget_epoch": res.budget_epoch,
                "mask_choices": res.mask_choices, "last_choice_step": res.last_choice_step,
                "result": result_columns(cost, base_cost, accuracy(model, ctx.data))}

    summary = run_in_folder(ctx.spec, ctx.data, ctx.out, config, "relupruner", ctx.base, ctx.teacher, ctx.progress,
                            body)
    entry = linearized("relupruner", config)
    return method_result(entry, config, ctx, summary, f"{entry} masks to {config.budget:,}")


__all__ = ["ReLUPrunerConfig", "run"]

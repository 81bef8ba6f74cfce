"""SENet (Kundu et al., ICLR 2023) and "Making Models Shallow Again" (gated branching, an auxiliary
classifier): per-layer ReLU budgets from pruning sensitivity, pixel masks learned within them,
frozen fine-tuning with KD and a feature term (``relucut.finegrained.senet``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import typer

from relucut.errors import RelucutError
from relucut.methods._config import MethodConfig, need, setting
from relucut.methods._context import method_result, per_budget_steps
from relucut.methods._registry import register_method
from relucut.methods._linearize import linearize_setting, linearized, linearized_frontier
from relucut.methods.snl import scaled_milestones

SENET_DECAYS = (90 / 180, 140 / 180, 160 / 180)  # SENet's 90/140/160 of 180 fine-tuning epochs


@dataclass
class SENetConfig(MethodConfig):
    """One SENet run (optionally shallow, with an auxiliary exit); defaults are the papers' and RLNet's
    code's unless a measurement chose otherwise.

    Measured at CPU scale (bench/finegrained_cifar10.py, ResNet18 width 8 at 16x16, 2 seeds, test points):
    counts proportional to eta (``allocation="count"``, RLNet's lists' shape) +0.31 over densities;
    gated branching dropping only inner ReLUs costs 1.41 points less at iso-ReLU than also dropping
    post-add ones; the feature term at beta / 2 is 2.07 ahead of beta; keeping the stem ReLU 0.79
    ahead of dropping it (RLNet's lists have one); 2 or 8 mask epochs score alike (RLNet's 150 kept).
    """

    method = "senet"

    budget: int | None = setting(None, help="Global ReLU budget, e.g. 25000 or 25k.")
    density: float = setting(0.1, help="Parameter density of the pruning-sensitivity probe.")
    sensitivity: str = setting("one-shot", help="one-shot (magnitude pruning of the base) or sparse-training (a "
                                                "short sparse training run at --density).",
                               choices=("one-shot", "sparse-training"))
    sensitivity_epochs: int = setting(5, help="Epochs of the sparse-training probe.")
    allocation: str = setting("count", help="Stage 1: layer ReLU counts proportional to eta (SENet's normalized "
                                            "sensitivity; RLNet's lists' shape) or each layer's kept fraction "
                                            "proportional to eta (density: flatter).", choices=("count", "density"))
    stem_relu: str = setting("keep", help="The stem ReLU masked like every layer (keep) or an identity (drop: as "
                                          "the papers' 491,520 ReLUs count ResNet18).", choices=("keep", "drop"))
    layer_budget: dict[str, int] | None = setting(None, help="Per-site ReLUs summing to the budget: replaces "
                                                             "stage 1's allocation.", cli=False)
    mask_epochs: int = setting(150, help="Stage 2: epochs of mask learning (RLNet's; 2 and 8 measured alike).")
    mask_learning: str = setting("scores", help="scores (learned by gradient) or distance (the SENet code's "
                                                "per-layer |teacher - student| top-k).", choices=("scores", "distance"))
    mask_lr: float = setting(0.01, help="Adam learning rate of the mask scores (scores only).")
    lr: float = setting(0.01, help="SGD learning rate of stages 2 and 3 (paper: 0.01).")
    finetune_epochs: int = setting(180, help="Stage 3 epochs (paper: 180).")
    milestones: list[int] = setting(help="Stage 3 epochs where the learning rate drops x0.1; the gates ramp "
                                         "until the first.", factory=lambda: [90, 140, 160])
    kd_weight: float = setting(0.9, help="KD weight (cross-entropy gets 1 - it).", aliases=("--lam",))
    feature_weight: float = setting(1000.0, help="Weight (beta) of the feature-map term.", aliases=("--beta",))
    feature_loss: str = setting("attention", help="attention (attention transfer on stage outputs) or pram "
                                                  "(eq. 2 literally).", choices=("attention", "pram"))
    feature_scale: str = setting("half", help="The feature term's factor: beta / 2 (half, eq. 2; 2.1 points ahead at "
                                              "CPU scale) or beta (full, as RLNet's code).", choices=("half", "full"))
    kd_temperature: float = setting(4.0, help="KD temperature.")
    shallow: bool = setting(False, help="Gated branching: blocks whose inner ReLU's sensitivity is below --dth "
                                        "become one conv-BN.")
    dth: float = setting(0.05, help="ReLU sensitivity (fraction kept) below which a layer is made shallow.")
    gb_drops: str = setting("inner", help="Which ReLU layers below --dth go: a block's inner ReLU (its conv pair "
                                          "merges; the paper's Table 1 counts) or inner+post-add.",
                            choices=("inner", "inner+post-add"))
    gate_schedule: str = setting("linear", help="Gate ramp: linear (i/ramp) or cosine.", choices=("linear", "cosine"))
    aux_after: str | None = setting(None, help="Add an auxiliary classifier (AKD) after this stage and export its "
                                               "exit, e.g. s3.")
    linearize: str = linearize_setting()

    @classmethod
    def for_frontier(cls, search_epochs: int, finetune_epochs: int) -> SENetConfig:
        """The frontier's SENet: its lengths, SENet's 90/140/160 of 180 scaled to them."""
        return cls(mask_epochs=search_epochs, finetune_epochs=finetune_epochs,
                   milestones=scaled_milestones(finetune_epochs, SENET_DECAYS))

    def check(self) -> None:
        super().check()
        need(self.budget is None or self.budget >= 1, f"budget must be >= 1 ReLU, got {self.budget}")
        need(0.0 < self.density < 1.0, f"--density must be in (0, 1) (the fraction of weights pruning keeps), "
                                       f"got {self.density}")
        need(self.mask_epochs >= 0 and self.finetune_epochs >= 0, "epochs must be >= 0")
        need(self.sensitivity_epochs >= 1, f"sensitivity_epochs must be >= 1, got {self.sensitivity_epochs}")
        need(self.mask_epochs + self.finetune_epochs >= 1, "nothing would train: give --mask-epochs or --finetune-epochs")
        need(self.lr > 0 and self.mask_lr > 0, "lr and mask_lr must be > 0")
        need(0.0 <= self.kd_weight <= 1.0, f"kd_weight must be in [0, 1], got {self.kd_weight}")
        need(self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}")
        need(self.feature_weight >= 0, f"feature_weight must be >= 0, got {self.feature_weight}")
        need(not self.shallow or 0.0 < self.dth < 1.0, f"--dth must be in (0, 1) (a ReLU sensitivity), got {self.dth}")
        need(all(m >= 1 for m in self.milestones), f"milestones must be epochs >= 1, got {self.milestones}")

    @property
    def weights(self):
        """The loss weights of stage 3 (``relucut.finegrained.losses.LossWeights``)."""
        from relucut.finegrained.losses import LossWeights

        return LossWeights(self.kd_weight, self.feature_weight, self.kd_temperature, self.feature_loss,
                           self.feature_scale)


def entry_of(config: SENetConfig) -> str:
    return linearized("senet-shallow" if config.shallow else "senet", config)


SHALLOW_ONLY = ("shallow", "dth", "gate_schedule", "gb_drops")  # settings that only gated branching reads


def frontier(entry: str, template: SENetConfig, fr) -> list:
    """One run per budget; a ``senet-shallow`` run whose network would be senet's (no ReLU layer
    below d_th) reuses the finished senet run of that budget instead of training a copy."""
    from relucut.methods._registry import get_method

    if template.linearize != "identity":
        return linearized_frontier("senet")(entry, template, fr)
    steps = per_budget_steps(get_method("senet"), entry, template, fr)
    if not template.shallow:
        return steps
    return [dataclasses.replace(step, work=lambda step=step: _shallow_or_senet(step, template, fr)) for step in steps]


def _shallow_or_senet(step, template: SENetConfig, fr) -> list:
    from relucut.rundir import RunDir, read_settings

    plain = fr.out / "senet" / str(step.budget)
    saved, done = read_settings(plain), RunDir(plain, {}).finished()
    mine = {k: v for k, v in template.with_budget(step.budget).to_dict().items() if k not in SHALLOW_ONLY}
    same = saved is not None and {k: v for k, v in saved.get("senet", {}).items() if k not in SHALLOW_ONLY} == mine
    if done is None or not same or _gated_layers(done, template, fr.ctx.spec):
        return step.work()
    fr.ctx.say(f"note: senet-shallow at {step.budget:,} ReLUs: no ReLU layer is below d_th {template.dth:g}, so its "
               f"network is senet's; reusing {plain}")
    config = template.with_budget(step.budget)
    return [method_result("senet-shallow", config, fr.ctx.at(plain), done, f"senet-shallow masks to {step.budget:,} "
                          "(= senet: nothing below d_th)")]


def _gated_layers(done: dict, template: SENetConfig, spec) -> bool:
    """Whether gated branching would change any ReLU layer of that finished SENet run."""
    from relucut.finegrained.gated import below_threshold
    from relucut.sites import addressable, find_sites

    model = addressable(spec.build())  # the form the run trained (functional ReLUs made sites)
    blocks, fading = below_threshold(find_sites(model, spec.input_size), done.get("layer_sensitivity", {}),
                                     template.dth, model, template.gb_drops)
    return bool(blocks or fading)


AuxClassifierOpt = Annotated[bool, typer.Option(
    "--aux-classifier", help="Train an auxiliary classifier (AKD) after --aux-after (default s3) and export its exit.")]


def cli_extra(config: SENetConfig, given: dict) -> SENetConfig:
    """``--aux-classifier`` puts the exit after s3 unless --aux-after says where; --dth needs --shallow."""
    if given.get("dth") is not None and not config.shallow:
        raise RelucutError("--dth applies to gated branching; add --shallow")
    if given.get("aux_classifier") and config.aux_after is None:
        return dataclasses.replace(config, aux_after="s3")
    return config


@register_method(SENetConfig, variants={"senet-shallow": {"shallow": True}, "senet-poly2": {"linearize": "poly2"}},
                 order=40, frontier=frontier,
                 cli_options=(("aux_classifier", AuxClassifierOpt, False),), cli_extra=cli_extra,
                 summary="SENet: per-layer budgets from pruning sensitivity, masks within them, frozen "
                         "fine-tuning (--shallow: gated branching).")
def run(config: SENetConfig, ctx):
    """SENet (+ shallow, + an AC exit) from the teacher to ``config.budget`` ReLUs (shallow: at most)."""
    from relucut.finegrained.pipeline import run_senet

    summary = run_senet(ctx.spec, ctx.data, ctx.out, config, base=ctx.base, teacher=ctx.teacher,
                        progress=ctx.progress)
    label = f"{entry_of(config)} masks to {config.budget:,}"
    if summary.get("shallow_blocks"):
        label += f", shallow {'+'.join(summary['shallow_blocks'])}"
    return method_result(entry_of(config), config, ctx, summary, label)


__all__ = ["SENetConfig", "run"]

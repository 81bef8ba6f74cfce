"""``relucut snl`` and ``relucut senet``: fine-grained linearization to an exact ReLU budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relucut.cli.app import app
from relucut.cli.options import (
    DeviceOpt, LimitTrainOpt, ModelOptions, QuietOpt, SeedOpt, check_teacher, need_extra, old_flag, parse_ints,
    with_model_options,
)
from relucut.errors import RelucutError

BudgetOpt = Annotated[str, typer.Option("--budget", "-b", help="Global ReLU budget, e.g. 25000 or 25k.")]
TeacherOpt = Annotated[str | None, typer.Option(
    "--teacher", help="Trained all-ReLU run dir or checkpoint (relucut train): start point and KD teacher.")]
BaseEpochsOpt = Annotated[int, typer.Option("--base-epochs", help="Without --teacher: epochs to train the all-ReLU base (relucut train's recipe).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size of every stage.")]
KDWeightOpt = Annotated[float, typer.Option("--kd-weight", help="KD weight (CE gets 1 - it).")]
LamOpt = Annotated[float | None, typer.Option("--lam", hidden=True, help="Old name of --kd-weight.")]
BetaOpt = Annotated[float | None, typer.Option("--beta", hidden=True, help="Old name of --feature-weight.")]
KDTemperatureOpt = Annotated[float, typer.Option("--kd-temperature", help="KD temperature.")]
OutOpt = Annotated[str | None, typer.Option("--out", "-o", help="Output folder (default runs/METHOD-MODEL-DATASET-BUDGET).")]
ValOpt = Annotated[float, typer.Option("--val-fraction", help="Share of the training set held out for evaluation.")]


def _base(model: ModelOptions, spec, teacher: str | None, val_fraction: float, seed: int, limit: int | None,
          base_epochs: int, batch_size: int, device: str):
    """The engine config the method's stages derive from, and the data it names (checked first)."""
    from relucut.train import TrainConfig, load_data

    if val_fraction <= 0:
        raise RelucutError("the fine-grained methods select and report on held-out images; use --val-fraction > 0")
    need_extra("onnx", "export", "the export's model.onnx")
    base = TrainConfig(model=spec, dataset=model.dataset.lower(), data_dir=model.data_dir,
                       val_fraction=val_fraction, seed=seed, limit_train=limit, epochs=base_epochs,
                       batch_size=batch_size, device=device).resolved()
    if teacher:  # the method starts from the teacher: it must be this network
        check_teacher(teacher, spec, model.dataset, full_relu=True)
    return base, load_data(base)


def _budget(text: str, spec) -> int:
    from relucut.budgets import parse_budget
    from relucut.cost import count
    from relucut.finegrained.budget import check_budget

    relus = parse_budget(text)
    check_budget(relus, count(spec.build(), spec.input_size).relus)
    return relus


def _out(out: str | None, method: str, model: str, dataset: str, budget: int) -> Path:
    return Path(out) if out else Path("runs") / f"{method}-{model.replace(':', '_')}-{dataset}-{budget}"


@app.command()
@with_model_options(data_dir=True)
def snl(
    model: ModelOptions,
    budget: BudgetOpt,
    granularity: Annotated[str, typer.Option("--granularity", help="pixel (C,H,W masks) or channel (C masks).")] = "pixel",
    search_epochs: Annotated[int, typer.Option("--search-epochs", help="Most epochs of mask search.")] = 10,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="KD fine-tuning epochs, masks frozen.")] = 10,
    recipe: Annotated[str, typer.Option("--recipe", help="relucut (default) | authors: SNL's public code "
                                        "(Adam 1e-3, 1e-5 L1 grown per epoch, threshold, cosine fine-tuning).")] = "relucut",
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate of the weights (relucut: SGD 0.01).")] = None,
    mask_lr: Annotated[float | None, typer.Option("--mask-lr", help="Adam learning rate of the mask scores (relucut: 0.01).")] = None,
    l1_init: Annotated[float | None, typer.Option("--l1", help="Initial L1 coefficient, grown while the count stalls (relucut: 0.1).")] = None,
    milestones: Annotated[str | None, typer.Option("--milestones", help="Fine-tuning LR decay epochs, e.g. 5,8 (relucut's recipe).")] = None,
    kd_weight: KDWeightOpt = 0.9,
    lam: LamOpt = None,
    kd_temperature: KDTemperatureOpt = 4.0,
    teacher: TeacherOpt = None,
    base_epochs: BaseEpochsOpt = 10,
    batch_size: BatchOpt = 128,
    val_fraction: ValOpt = 0.1,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """SNL: learn per-pixel or per-channel ReLU masks with an adaptive L1 penalty down to BUDGET ReLUs."""
    from relucut.finegrained.pipeline import run_snl
    from relucut.finegrained.snl import SNLConfig

    spec = model.spec()
    relus = _budget(budget, spec)
    if granularity not in ("pixel", "channel"):
        raise RelucutError(f"unknown --granularity '{granularity}'; use pixel or channel")
    if recipe not in ("relucut", "authors"):
        raise RelucutError(f"unknown --recipe '{recipe}'; use relucut or authors")
    changes = {k: v for k, v in {"lr": lr, "mask_lr": mask_lr, "l1_init": l1_init}.items() if v is not None}
    common = dict(granularity=granularity, search_epochs=search_epochs, finetune_epochs=finetune_epochs,
                  kd_temperature=kd_temperature, **changes)
    if recipe == "authors":
        if milestones or lam is not None or kd_weight != 0.9:
            raise RelucutError("--milestones and --kd-weight belong to relucut's recipe; the authors' fine-tunes "
                               "with a cosine schedule and weighs CE and KD equally (drop them or use --recipe relucut)")
        cfg = SNLConfig.authors(relus, **common)
    else:
        cfg = SNLConfig(budget=relus, milestones=parse_ints(milestones, "--milestones", "5,8") or [],
                        kd_weight=old_flag(kd_weight, lam), **common)
    cfg.check()
    base, data = _base(model, spec, teacher, val_fraction, seed, limit_train, base_epochs, batch_size, device)
    result = run_snl(spec, data, _out(out, "snl", model.model, model.dataset, relus), cfg, base=base,
                     teacher=teacher, progress=not quiet)
    typer.echo(json.dumps(result))


@app.command()
@with_model_options(data_dir=True)
def senet(
    model: ModelOptions,
    budget: BudgetOpt,
    density: Annotated[float, typer.Option("--density", help="Parameter density of the pruning-sensitivity probe.")] = 0.1,
    mask_epochs: Annotated[int, typer.Option("--mask-epochs", help="Stage 2: epochs of mask learning.")] = 5,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Stage 3 epochs (paper: 180).")] = 180,
    lr: Annotated[float, typer.Option("--lr", help="SGD learning rate (paper: 0.01).")] = 0.01,
    mask_lr: Annotated[float, typer.Option("--mask-lr", help="Adam learning rate of the mask scores.")] = 0.01,
    sensitivity: Annotated[str, typer.Option("--sensitivity", help="one-shot (magnitude pruning of the base, default) | "
                                             "sparse-training (a short sparse training run at --density).")] = "one-shot",
    sensitivity_epochs: Annotated[int, typer.Option("--sensitivity-epochs", help="Epochs of the sparse-training probe.")] = 5,
    mask_learning: Annotated[str, typer.Option("--mask-learning", help="scores (learned by gradient, default) | "
                                               "distance (the SENet code's per-layer |teacher - student| top-k).")] = "scores",
    milestones: Annotated[str, typer.Option("--milestones", help="Stage 3 LR / 10 epochs; the gate ramps until the first.")] = "90,140,160",
    kd_weight: KDWeightOpt = 0.9,
    lam: LamOpt = None,
    feature_weight: Annotated[float, typer.Option("--feature-weight", help="Weight (beta) of the feature-map term.")] = 1000.0,
    beta: BetaOpt = None,
    feature_loss: Annotated[str, typer.Option("--feature-loss", help="attention (attention transfer on stage outputs) or pram (eq. 2 literally).")] = "attention",
    kd_temperature: KDTemperatureOpt = 4.0,
    shallow: Annotated[bool, typer.Option("--shallow", help="Gated branching: blocks below --dth become one conv-BN.")] = False,
    dth: Annotated[float, typer.Option("--dth", help="ReLU sensitivity below which a block is made shallow.")] = 0.05,
    gate_schedule: Annotated[str, typer.Option("--gate-schedule", help="linear (i/ramp) or cosine.")] = "linear",
    aux_classifier: Annotated[bool, typer.Option("--aux-classifier", help="Train an auxiliary classifier (AKD) and export its exit.")] = False,
    aux_after: Annotated[str, typer.Option("--aux-after", help="Stage the auxiliary classifier follows.")] = "s3",
    teacher: TeacherOpt = None,
    base_epochs: BaseEpochsOpt = 10,
    batch_size: BatchOpt = 128,
    val_fraction: ValOpt = 0.1,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """SENet: per-layer budgets from pruning sensitivity, masks within them, frozen fine-tuning (+ shallow)."""
    from relucut.finegrained.pipeline import run_senet
    from relucut.finegrained.senet import SENetConfig

    spec = model.spec()
    relus = _budget(budget, spec)
    if dth != 0.05 and not shallow:
        raise RelucutError("--dth applies to gated branching; add --shallow")
    if aux_classifier:
        from relucut.finegrained.aux import check_aux_model

        check_aux_model(spec.build(), aux_after)
    cfg = SENetConfig(
        budget=relus, density=density, sensitivity=sensitivity, sensitivity_epochs=sensitivity_epochs,
        mask_epochs=mask_epochs, mask_lr=mask_lr, mask_learning=mask_learning, lr=lr,
        finetune_epochs=finetune_epochs, milestones=parse_ints(milestones, "--milestones", "90,140,160") or [],
        kd_weight=old_flag(kd_weight, lam), feature_weight=old_flag(feature_weight, beta), feature_loss=feature_loss,
        kd_temperature=kd_temperature, shallow=shallow, dth=dth, gate_schedule=gate_schedule,
        aux_after=aux_after if aux_classifier else None,
    )
    cfg.check()  # before any data is read or anything written
    base, data = _base(model, spec, teacher, val_fraction, seed, limit_train, base_epochs, batch_size, device)
    method = "senet" + ("-shallow" if shallow else "")
    result = run_senet(spec, data, _out(out, method, model.model, model.dataset, relus), cfg, base=base,
                       teacher=teacher, progress=not quiet)
    typer.echo(json.dumps(result))

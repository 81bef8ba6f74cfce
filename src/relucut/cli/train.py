"""``relucut train`` and ``relucut eval``: train a (plan-applied) model into a resumable run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from relucut.cli.app import app
from relucut.cli.options import (
    BatchOpt, CullOpt, DataDirOpt, DeviceOpt, EpochsOpt, ImageSizeOpt, LimitTrainOpt, LrOpt, ModelOptions, OutOpt,
    QuietOpt, ScheduleOpt, SeedOpt, StepOpt, TeacherOpt, ThinOpt, TrustFactoryOpt, ValFractionOpt, absolute,
    parse_ints, resolve_plan, trust_factories, with_model_options,
)
from relucut.errors import RelucutError


@app.command()
@with_model_options(data_dir=True)
def train(
    model: ModelOptions,
    cull: CullOpt = None,
    thin: ThinOpt = None,
    data_dir: DataDirOpt = None,
    download: Annotated[bool, typer.Option("--download", help="Fetch CIFAR into --data-dir if absent (needs internet).")] = False,
    val_fraction: ValFractionOpt = 0.1,
    val_from: Annotated[str, typer.Option("--val-from", help="random (seeded) | tail (last files, e.g. CIFAR-10's last 5,000).")] = "random",
    plan: Annotated[Optional[str], typer.Option("--plan", help="A ReLU plan JSON to apply before training.")] = None,
    teacher: TeacherOpt = None,
    epochs: EpochsOpt = 120,
    batch_size: BatchOpt = 128,
    lr: LrOpt = 0.1,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (momentum) | adam.")] = "sgd",
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="L2 weight decay.")] = 4e-4,
    schedule: ScheduleOpt = "step",
    step_size: StepOpt = None,
    milestones: Annotated[Optional[str], typer.Option("--milestones", help="Step schedule epochs, e.g. 60,90 (overrides --step-size).")] = None,
    kd_temperature: Annotated[float, typer.Option("--kd-temperature", help="KD temperature (with --teacher).")] = 4.0,
    kd_weight: Annotated[float, typer.Option("--kd-weight", help="Weight of the KD term; 1 - it weighs cross-entropy.")] = 0.9,
    augment: Annotated[Optional[str], typer.Option("--augment", help="crop+flip | crop | flip | none (default per dataset).")] = None,
    image_size: ImageSizeOpt = None,
    limit_train: LimitTrainOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Log to RUN_DIR/tensorboard (extra).")] = False,
    out: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train MODEL (with --plan, KD from --teacher) into a run directory; rerun to resume."""
    from relucut.data import check_available, load_dataset
    from relucut.train import TrainConfig, build_model, train as run_training

    # everything is checked before the run directory is claimed: a refused command leaves nothing
    spec = model.spec()  # an imagefolder's class count and image size come from its files
    relu_plan = resolve_plan(spec, plan, cull, thin) if plan or cull or thin else None
    config = TrainConfig(
        model=spec, dataset=model.dataset.lower(), data_dir=data_dir, val_fraction=val_fraction,
        val_from=val_from, plan=relu_plan,
        teacher=absolute(teacher), epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, step_size=step_size,
        milestones=parse_ints(milestones, "--milestones", "60,90"), kd_temperature=kd_temperature,
        kd_weight=kd_weight, augment=augment, limit_train=limit_train, seed=seed, device=device, compile=compile,
        tensorboard=tensorboard,
    )
    digest = config.resolved().digest()  # checks every setting
    build_model(config)  # the model builds and the plan fits it
    if teacher:
        from relucut.train.checkpoint import find_checkpoint

        find_checkpoint(teacher)
    check_available(config.dataset, data_dir, download=download)
    run_dir = Path(out) if out else Path("runs") / f"{spec.name.replace(':', '_')}-{config.dataset}-{digest}"
    data = load_dataset(config.dataset, data_dir, val_fraction=val_fraction, seed=seed, download=download,
                        image_size=spec.image_size if config.dataset == "imagefolder" else None, val_from=val_from)
    final = run_training(config, run_dir, progress=not quiet, data=data)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one answer
        typer.echo(json.dumps({"run_dir": str(run_dir), **final}))


@app.command("eval")
def evaluate_run(
    run: Annotated[str, typer.Argument(help="A run directory (its best.pt), a checkpoint file, or an export of a run.")],
    split: Annotated[str, typer.Option("--split", help="test | val | train.")] = "test",
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Override the run's dataset location.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda.")] = "cpu",
    trust_factory: TrustFactoryOpt = None,
) -> None:
    """Accuracy of a trained run (or checkpoint, or export of a run) on a split of its dataset; prints one JSON object."""
    from relucut.recipe import is_export_dir

    trust_factories(trust_factory)
    if is_export_dir(run):
        result = _evaluate_export(run, split, data_dir, device)
        typer.echo(json.dumps(result))
        return
    from relucut.data import load_dataset
    from relucut.train import evaluate, load_checkpoint_model
    from relucut.train.distributed import Dist, resolve_device

    net = load_checkpoint_model(run)
    cfg = net.relucut_config
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                        image_size=cfg.spec().image_size, val_from=cfg.val_from)
    if data.test is None and split == "test":
        raise RelucutError(f"the {cfg.dataset} files hold no test split; use --split val")
    target = resolve_device(device, Dist())
    result = evaluate(net.to(target), data, split=split, device=target)
    typer.echo(json.dumps({"run": str(run), "dataset": cfg.dataset, "split": split, **result}))


def _evaluate_export(export_dir: str, split: str, data_dir: str | None, device: str) -> dict:
    """An export of a trained run (``relucut export RUN_DIR``) on its dataset's test split, with the
    normalization the run trained with (both recorded in the recipe)."""
    from relucut.data import load_dataset
    from relucut.export import load_export
    from relucut.train import evaluate
    from relucut.train.distributed import Dist, resolve_device

    net = load_export(export_dir)
    meta = net.relucut_recipe.meta
    normalize = meta.get("normalize") or {}
    if not meta.get("dataset") or not normalize.get("mean"):
        raise RelucutError(f"'{export_dir}' is an export of an untrained model (no dataset or input normalization "
                           "recorded); evaluate a trained run, or export one with relucut export RUN_DIR")
    if split != "test":
        raise RelucutError(f"an export is evaluated on the test split (its run's validation carve is not in it); "
                           f"use --split test, or eval the run directory {meta.get('run', '')}".rstrip())
    spec = net.relucut_recipe.model
    data = load_dataset(meta["dataset"], data_dir or _run_data_dir(meta.get("run")), split="test",
                        image_size=spec.image_size if meta["dataset"] == "imagefolder" else None)
    target = resolve_device(device, Dist())
    result = evaluate(net.to(target), data, mean=tuple(normalize["mean"]), std=tuple(normalize["std"]),
                      device=target)
    return {"export": str(export_dir), "dataset": meta["dataset"], "split": split, **result}


def _run_data_dir(run: str | None) -> str | None:
    """The data folder the exported run trained from, if its config is still there."""
    if not run:
        return None
    config = Path(run) / "config.json" if Path(run).is_dir() else Path(run).parent / "config.json"
    try:
        return json.loads(config.read_text()).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None
